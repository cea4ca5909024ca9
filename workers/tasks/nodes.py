"""Node tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

from celery import shared_task

from portal.nodes.services import sync_nodes
from portal.slurm.errors import SlurmUnavailable


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30,
             max_retries=3)
def sync_nodes_task() -> dict:
    """Mirror Slurm's node list into the database. Safe to run twice: it only upserts."""
    result = sync_nodes()
    return {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}


@shared_task
def apply_node_policy_task(node_id: int) -> None:
    """Decide what a node's latest health reports mean (drain, resume, lemon detection).

    Enqueued after every stored health report (portal/nodes/reports.py). A stub until the
    node policy lands: the reports and findings are already stored for it to read.
    """
    return None
