"""Health of the portal's dependencies, for /healthz and `make demo`'s wait loop."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection

from portal.slurm import gateway
from portal.slurm.errors import SlurmError


def check_dependencies() -> dict[str, str]:
    """'ok' or a one-line error for each dependency; never raises."""
    results = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        results["database"] = "ok"
    except Exception as exc:
        results["database"] = f"error: {exc}"
    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2).ping()
        results["broker"] = "ok"
    except redis.RedisError as exc:
        results["broker"] = f"error: {exc}"
    try:
        gateway.ping()
        results["slurm"] = "ok"
    except SlurmError as exc:
        results["slurm"] = f"error: {exc.message}"
    return results
