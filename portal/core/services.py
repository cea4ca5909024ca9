"""Health of the portal's dependencies and background parts, for /healthz and `make demo`'s wait loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from portal.infra import liveness
from portal.infra.cache import bounded_client
from portal.slurm import gateway
from portal.slurm.errors import SlurmError

# /healthz answers within this (s) whatever hangs: each check runs in its own thread, and a
# check still running at the deadline is reported as timed out (its thread ends on its own
# timeout: PostgreSQL's, Redis's, the gateway's).
HEALTH_DEADLINE_S = 1.5
# Redis answers in a millisecond; /healthz need not wait the full PORTAL_REDIS_TIMEOUT to say
# it does not, which keeps its answer well inside 2 s even when requests queue.
HEALTH_REDIS_TIMEOUT_S = 0.5


@dataclass
class Health:
    checks: dict[str, str]
    ages: dict[str, float | None] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def as_dict(self) -> dict:
        failing = [name for name, verdict in self.checks.items() if verdict != "ok"]
        ages = {part: None if age is None else round(age, 1) for part, age in self.ages.items()}
        return {"status": "ok" if self.healthy else "degraded", "failing": failing, "checks": self.checks,
                "ages_s": ages}


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    finally:
        connection.close()  # this thread's own connection: nobody else will close it


def _broker() -> str:
    bounded_client(settings.CELERY_BROKER_URL, min(HEALTH_REDIS_TIMEOUT_S, settings.PORTAL_REDIS_TIMEOUT_S)).ping()
    return "ok"


def _slurm() -> str:
    gateway.ping()
    return "ok"


def _ages() -> dict[str, float | None]:
    return liveness.ages(timeout=min(HEALTH_REDIS_TIMEOUT_S, settings.PORTAL_REDIS_TIMEOUT_S))


def _describe(exc: BaseException) -> str:
    return f"error: {exc.message if isinstance(exc, SlurmError) else exc}"


def _run_bounded(checks: dict[str, Callable[[], object]], deadline_s: float) -> dict[str, object]:
    """Run every check at once in daemon threads; an unfinished check at the deadline is a timeout."""
    results: dict[str, object] = {}

    def run(name: str, check: Callable[[], object]) -> None:
        try:
            results[name] = check()
        except Exception as exc:
            results[name] = exc

    deadline = time.monotonic() + deadline_s
    threads = [threading.Thread(target=run, args=item, daemon=True, name=f"healthz-{item[0]}")
               for item in checks.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, TimeoutError(f"no answer within {deadline_s:g} s")) for name in checks}


def check_health() -> Health:
    """Dependencies (database, broker, Slurm) and background parts (worker, beat, tracker, node
    check), within HEALTH_DEADLINE_S; never raises."""
    found = _run_bounded({"database": _database, "broker": _broker, "slurm": _slurm, "liveness": _ages},
                         HEALTH_DEADLINE_S)
    checks = {name: "ok" if found[name] == "ok" else _describe(found[name])  # type: ignore[arg-type]
              for name in ("database", "broker", "slurm")}
    part_ages = found["liveness"]
    if isinstance(part_ages, BaseException):
        checks.update(dict.fromkeys(liveness.PARTS, f"unknown: heartbeats unreadable ({_describe(part_ages)})"))
        return Health(checks)
    checks.update(liveness.verdicts(part_ages))  # type: ignore[arg-type]
    return Health(checks, part_ages)  # type: ignore[arg-type]

