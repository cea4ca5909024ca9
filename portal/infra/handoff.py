"""Handing work to Celery from a request without ever waiting on the broker for long.

A publish with Celery's defaults retries a dead broker for seconds, and waits forever on a
stalled one: with Redis frozen, every gunicorn worker hung in report intake. Here a publish
is tried once, bounded by the broker's socket timeouts (settings: PORTAL_REDIS_TIMEOUT), and a failure is
logged and reported to the caller, which carries on: what it handed off has a periodic
safety net (e.g. the node check decides for every node from the stored reports).

After a failure, hand-offs are skipped for a few seconds (portal.infra.cache.Breaker), so an
outage costs the first request one timeout and the following ones nothing.
"""

from __future__ import annotations

import logging

import redis
from celery import current_app
from kombu.exceptions import OperationalError

from portal.infra.cache import Breaker

log = logging.getLogger(__name__)
BROKER_BREAKER = Breaker("broker")


def hand_off(task_name: str, *args: object) -> bool:
    """Send the task named `task_name` with `args` to the broker; False (logged) when the broker
    is unreachable or slow. By name, so portal apps never import the workers package."""
    if BROKER_BREAKER.open:
        log.info("broker down: %s%r not sent (the periodic check will cover it)", task_name, args)
        return False
    try:
        # ignore_result: nobody waits for it, and asking for it would subscribe to the result
        # backend first (another Redis round trip, with its own unbounded reconnect loop).
        current_app.send_task(task_name, args=args, retry=False, ignore_result=True)
    except (OperationalError, redis.RedisError, OSError, RuntimeError) as exc:
        BROKER_BREAKER.trip(f"{task_name}{args!r} not sent; the periodic check will cover it", exc)
        return False
    return True
