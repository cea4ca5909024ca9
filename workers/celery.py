"""The Celery app. Tasks live in workers/tasks/<area>.py and call one service each.

Broker timeouts come from settings (PORTAL_REDIS_TIMEOUT); the signal handlers below write
the heartbeats /healthz and /metrics read (portal/infra/liveness.py).
"""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# Every task module is listed here so the worker registers them at start-up.
app = Celery("portal", include=["workers.tasks.nodes", "workers.tasks.jobs", "workers.tasks.notify",
                                "workers.tasks.reliability", "workers.tasks.recovery",
                                "workers.tasks.teams"])
app.config_from_object("django.conf:settings", namespace="CELERY")

_worker_heartbeat = None


# Imports inside the handlers: this module loads while Django's settings are still loading.
@signals.worker_init.connect
def _start_heartbeat(**_) -> None:
    global _worker_heartbeat  # noqa: PLW0603  (one heartbeat thread per worker)
    from portal.infra import liveness  # noqa: PLC0415

    _worker_heartbeat = liveness.start_worker_heartbeat()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_) -> None:
    if _worker_heartbeat is not None:
        _worker_heartbeat.set()


@signals.task_prerun.connect
def _task_heartbeat(**_) -> None:
    from portal.infra import liveness  # noqa: PLC0415

    liveness.mark("worker")


@signals.beat_init.connect
def _beat_heartbeats(**_) -> None:
    """Only in the beat process: every task it sends is its heartbeat."""
    from portal.infra import liveness  # noqa: PLC0415

    signals.before_task_publish.connect(lambda **_: liveness.mark("beat"), weak=False)
