"""Job tasks: thin wrappers that call one service each."""

from __future__ import annotations

from celery import shared_task

from portal.infra.liveness import mark
from portal.jobs.tracking import track_jobs
from portal.slurm.errors import SlurmUnavailable


# expires: beat sends one every second, so after a worker outage the queue holds a backlog
# of ticks that a newer tick supersedes; they are dropped instead of run. 30 s leaves room for
# the retries (at most 2 + 4 + 8 s apart), which keep the first attempt's expiry.
@shared_task(autoretry_for=(SlurmUnavailable,), retry_backoff=2, retry_backoff_max=30,
             retry_jitter=True, max_retries=3, expires=30)
def track_jobs_task() -> dict:
    """One tracking cycle (beat runs it every second).

    Safe to run twice at once: the second finds the tracker's lock taken and returns. While
    Slurm is unreachable it retries a few times with backoff, then gives up until the next tick.
    """
    result = track_jobs()
    if result.ran:
        mark("tracker")  # /healthz: the age of the last cycle that ran
    return result.as_dict()
