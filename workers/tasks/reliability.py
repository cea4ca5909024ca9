"""Reliability tasks: thin wrappers that call one service each."""

from __future__ import annotations

from celery import shared_task

from portal.recovery.reliability import refresh


# expires: beat sends one a minute; after a worker outage the backlog of stale ones is dropped.
@shared_task(expires=60)
def refresh_reliability_task() -> dict:
    """Recompute goodput and ETTR into the cache that /metrics and the reliability page read."""
    return refresh()
