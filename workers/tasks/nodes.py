"""Node tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

from celery import shared_task

from portal.infra.liveness import mark
from portal.nodes.hung import find_hung_nodes
from portal.nodes.policy import apply_node_policy, check_nodes
from portal.nodes.retention import prune_health_reports
from portal.nodes.services import sync_nodes
from portal.slurm.errors import SlurmUnavailable


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30,
             max_retries=3)
def sync_nodes_task() -> dict:
    """Mirror Slurm's node list into the database. Safe to run twice: it only upserts."""
    result = sync_nodes()
    return {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=1, retry_backoff_max=10,
             max_retries=3)
def apply_node_policy_task(node_id: int) -> str:
    """Decide what a node's latest health reports mean and act on it (portal/nodes/policy.py).

    Enqueued after every stored health report (portal/nodes/reports.py). Safe to run twice:
    each action re-reads the node's live state first (draining a drained node does nothing).
    """
    return apply_node_policy(node_id)


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30,
             max_retries=3)
def check_nodes_task() -> dict:
    """The periodic node check (beat, every 10 s): sync, outages, stale sensors, the policy over all."""
    result = check_nodes()
    mark("node_check", force=True)  # /healthz: the age of the last node check
    return {"down": result.down, "up": result.up, "stale": result.stale, "acted": result.acted}


@shared_task
def prune_health_reports_task() -> dict:
    """Health report retention (beat, every minute): fold old raw reports into hourly summaries and
    delete them, a bounded amount per run. Safe to run twice: a folded report is gone."""
    result = prune_health_reports()
    return {"summarised": result.summarised, "summaries_deleted": result.summaries_deleted, "more": result.more}


@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=1, retry_backoff_max=5, max_retries=2)
def find_hung_nodes_task() -> dict:
    """The hung-node check (beat, every 3 s): probe the slurmd of nodes whose sensors went silent
    and mark the hung ones DOWN (portal/nodes/hung.py). Safe to run twice: the down is claimed."""
    result = find_hung_nodes()
    return {"probed": result.probed, "downed": result.downed, "alerted": result.alerted}
