"""Recovery tasks: thin wrappers that call one service each."""

from __future__ import annotations

from celery import shared_task

from portal.recovery.cycle import recover_jobs
from portal.recovery.services import evacuate_node
from portal.slurm.errors import SlurmUnavailable


# expires: beat sends one every second; after a worker outage a newer tick supersedes the backlog.
@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=1, retry_backoff_max=10, retry_jitter=True,
             max_retries=3, expires=30)
def recover_jobs_task() -> dict:
    """One recovery cycle (portal/recovery/cycle.py). Safe to run twice at once: the second
    finds the cycle's lock taken and returns; every step re-reads Slurm before acting."""
    return recover_jobs().as_dict()


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=1, retry_backoff_max=5, max_retries=3)
def evacuate_node_task(node_name: str, cause: str, detail: str) -> list[int]:
    """Requeue every job on a node with a fatal finding or found hung (portal/recovery/services.py).

    For the node policy to send by name (portal.infra.handoff.hand_off), so portal.nodes need
    not import portal.recovery, which imports it. Idempotent: a run already moved is not again.
    """
    return evacuate_node(node_name, cause=cause, detail=detail)
