"""Handing work to Celery from a request without ever waiting on the broker for long.

A publish with Celery's defaults retries a dead broker for seconds, and waits forever on a
stalled one: with Redis frozen, every gunicorn worker hung in report intake. Here a publish
is tried once, bounded by the broker's socket timeouts (workers/celery.py), and a failure is
logged and reported to the caller, which carries on: what it handed off has a periodic
safety net (e.g. the node check decides for every node from the stored reports).

After a failure, hand-offs are skipped for BROKER_DOWN_S, so an outage costs the first
request one timeout and the following ones nothing.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import Task
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)
BROKER_DOWN_S = 5.0
_down_until = 0.0


def hand_off(task: Task, *args: object) -> bool:
    """Send `task(*args)` to the broker; False (logged) when the broker is unreachable or slow."""
    global _down_until  # noqa: PLW0603  (a process-wide circuit breaker)
    if time.monotonic() < _down_until:
        log.warning("broker marked down: %s%r not sent (the periodic check will cover it)", task.name, args)
        return False
    try:
        task.apply_async(args=args, retry=False)
    except (OperationalError, redis.RedisError, OSError) as exc:
        _down_until = time.monotonic() + BROKER_DOWN_S
        log.warning("broker unavailable: %s%r not sent (the periodic check will cover it): %s",
                    task.name, args, exc)
        return False
    return True


def reset() -> None:
    """Forget an earlier failure (tests that restore the broker)."""
    global _down_until  # noqa: PLW0603
    _down_until = 0.0
