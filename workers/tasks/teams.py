"""Team tasks: thin wrappers that call one service."""

from __future__ import annotations

from celery import shared_task

from portal.quotas.rollup import fold_changed_jobs
from portal.quotas.services import sync_teams_to_slurm
from portal.slurm.errors import SlurmUnavailable


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30, max_retries=3)
def reconcile_teams_task() -> dict:
    """Make Slurm's accounts, associations, coordinators, shares and GPU caps match the teams
    (portal/quotas/reconcile.py). Handed off after a policy change and run by beat as the safety
    net that also repairs drift. Safe to run twice: the second run finds nothing to do."""
    plan = sync_teams_to_slurm()
    return {"applied": len(plan.changes) - len(plan.failed), "failed": len(plan.failed)}


@shared_task
def fold_usage_task() -> dict:
    """Fold the jobs that finished or changed since the last run into the GPU-hour rollup
    (portal/quotas/rollup.py). Beat runs it every PORTAL_USAGE_ROLLUP_SECONDS; running it twice
    is harmless (the second waits or finds nothing new, and a fold is exact, never additive)."""
    return fold_changed_jobs().as_dict()
