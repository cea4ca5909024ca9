"""Is the background alive? Heartbeats of the worker, beat, tracker and node check, for
/healthz and /metrics.

Each part writes the time of its newest sign of life to Redis (`mark`): the worker from a
thread and before every task, beat whenever it sends a task, the tracker after each cycle
and the node check after each check. Readers compare the ages with PORTAL_LIVENESS_STALE_S.
A dead worker once left /healthz "ok" while job states went 50 s stale: nothing asked.

Writing never raises (a heartbeat lost to a Redis outage only makes a part look stale, which
/healthz reports anyway since Redis is down); keys are per database, like the tracker's.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings
from django.db import connection

from portal.infra.cache import cache_client

log = logging.getLogger(__name__)
PARTS = ("worker", "beat", "tracker", "node_check")
# A part writes at most this often (s): the tracker cycles every second, beat sends as often.
MIN_INTERVAL_S = 1.0
# What the worker's own thread writes between tasks (s), well inside the stale threshold.
WORKER_BEAT_S = 5.0
KEY_TTL_S = 7 * 24 * 3600
_last_marked: dict[str, float] = {}


def _key(part: str) -> str:
    return f"portal:liveness:{connection.settings_dict['NAME']}:{part}"


def mark(part: str, *, force: bool = False) -> None:
    """Record that `part` is alive now. Never raises."""
    now = time.time()
    if not force and now - _last_marked.get(part, 0.0) < MIN_INTERVAL_S:
        return
    _last_marked[part] = now
    try:
        cache_client().set(_key(part), repr(now), ex=KEY_TTL_S)
    except redis.RedisError as exc:
        log.debug("liveness: %s heartbeat not written: %s", part, exc)


def ages(*, now: float | None = None, timeout: float | None = None) -> dict[str, float | None]:
    """Seconds since each part's newest heartbeat (None: never seen). Raises redis.RedisError."""
    now = time.time() if now is None else now
    values = cache_client(timeout).mget([_key(part) for part in PARTS])
    return {part: None if raw is None else max(0.0, now - float(raw))
            for part, raw in zip(PARTS, values, strict=True)}


def verdicts(part_ages: dict[str, float | None]) -> dict[str, str]:
    """'ok' or what is wrong, for each part."""
    limits = settings.PORTAL_LIVENESS_STALE_S
    out = {}
    for part, age in part_ages.items():
        if age is None:
            out[part] = "down: never seen"
        elif age > limits[part]:
            out[part] = f"stale: last seen {age:.0f} s ago (limit {limits[part]:g} s)"
        else:
            out[part] = "ok"
    return out


def metric_lines() -> list[str]:
    """Prometheus lines for /metrics (portal/nodes/metrics.py). Bounded by the Redis timeout."""
    try:
        part_ages = ages()
    except redis.RedisError:
        part_ages = dict.fromkeys(PARTS)
    verdict = verdicts(part_ages)
    lines = []
    for part in ("worker", "beat"):
        lines += [f"# HELP portal_{part}_up 1 when the {part} sent a heartbeat within its stale limit.",
                  f"# TYPE portal_{part}_up gauge", f"portal_{part}_up {int(verdict[part] == 'ok')}"]
    for part, name in (("tracker", "portal_tracker_last_cycle_age_seconds"),
                       ("node_check", "portal_node_check_last_age_seconds")):
        lines += [f"# HELP {name} Seconds since the last completed {part.replace('_', ' ')}.", f"# TYPE {name} gauge"]
        if part_ages[part] is not None:
            lines.append(f"{name} {part_ages[part]:.3f}")
    return lines


def start_worker_heartbeat() -> threading.Event:
    """Beat for the worker every WORKER_BEAT_S from a daemon thread, so an idle worker (beat
    down, nothing to run) still shows as alive. Set the returned event to stop it."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            mark("worker", force=True)
            stop.wait(WORKER_BEAT_S)

    threading.Thread(target=run, name="portal-liveness", daemon=True).start()
    return stop
