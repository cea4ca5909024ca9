"""Team tasks: thin wrappers that call one service."""

from __future__ import annotations

from celery import shared_task

from portal.quotas import coordinators
from portal.quotas.rollup import fold_changed_jobs
from portal.quotas.services import sync_teams_to_slurm
from portal.slurm.errors import SlurmUnavailable


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30, max_retries=3)
def reconcile_teams_task() -> dict:
    """Make Slurm's accounts, associations, coordinators, shares and GPU caps match the teams
    (portal/quotas/reconcile.py). Handed off after a policy change and run by beat as the safety
    net that also repairs drift. Safe to run twice: the second run finds nothing to do."""
    plan = sync_teams_to_slurm(wait_for_coordinators=False)
    return {"applied": len(plan.changes) - len(plan.failed), "failed": len(plan.failed)}


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30, max_retries=3)
def refresh_coordinators_task() -> dict:
    """Read every Slurm coordinator into the reconciler's copy (portal/quotas/coordinators.py),
    off the reconcile path: ~10 s at 1,000 coordinators on slurmdbd 22.05. Beat runs it every
    PORTAL_COORDINATOR_REFRESH_SECONDS; "missed" counts rights changed behind slurmdbd's log."""
    return coordinators.refresh()


@shared_task
def fold_usage_task() -> dict:
    """Fold the jobs that finished or changed since the last run into the GPU-hour rollup
    (portal/quotas/rollup.py). Beat runs it every PORTAL_USAGE_ROLLUP_SECONDS; running it twice
    is harmless (the second waits or finds nothing new, and a fold is exact, never additive)."""
    return fold_changed_jobs().as_dict()
