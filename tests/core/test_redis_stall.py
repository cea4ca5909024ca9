"""A frozen Redis (SIGSTOP: it accepts connections and never answers) degrades the portal
instead of hanging it. Before every Redis call was bounded, a health report hung its gunicorn
worker on the Celery hand-off, /healthz hung on its broker ping, and pages hung on the cache.

Only this test's own redis-server is stopped (helper.env points the test run at it), and it
is always continued.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone

from portal.infra.cache import CACHE_BREAKER
from portal.infra.handoff import BROKER_BREAKER
from portal.jobs.models import Job
from portal.nodes.models import HealthReport, NodeAction
from portal.slurm import gateway
from slurm_plugins.report import Envelope
from tests.api.conftest import api, member, teams, world  # noqa: F401
from tests.nodes.policy_support import own_nodes, xid  # noqa: F401
from tests.slurm_plugins.signed_reports import body, master_key, send  # noqa: F401
from workers.tasks.nodes import check_nodes_task

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("master_key", "own_nodes", "celery_settled")]

# Seconds a request may take with Redis frozen: the Redis timeout (1 s) and the work itself.
BOUND_S = 2.5


def _redis_pid() -> int:
    """The pid of the redis-server this test run uses, checked against its port."""
    url = urlparse(settings.CACHES["default"]["LOCATION"])
    info = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"], socket_timeout=2).info("server")
    assert info["tcp_port"] == url.port and url.port != 6379, "refusing to stop a shared Redis"
    return int(info["process_id"])


@contextmanager
def frozen_redis():
    pid = _redis_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def timed(call):
    start = time.monotonic()
    resp = call()
    return resp, time.monotonic() - start


def test_a_frozen_redis_degrades_and_the_node_check_processes_the_stored_report(
        api, world, teams, caplog):  # noqa: F811
    Job.objects.create(owner=world["alice"], team=teams["vision"], name="before-the-stall", script="#!/bin/bash\n",
                       state="RUNNING", submit_time=timezone.now())
    caplog.set_level(logging.WARNING)
    with frozen_redis():
        # The report is stored and answered at once; its policy task cannot be sent.
        sent, took = timed(lambda: send(Envelope(body("gpu08", findings=[xid(48, 1)])), "gpu08"))
        assert sent.status_code == 202, sent.content
        assert took < BOUND_S, f"health report took {took:.1f} s"
        assert HealthReport.objects.filter(node__name="gpu08", clean=False).count() == 1
        assert any("broker unavailable" in r.getMessage() and "apply_node_policy_task" in r.getMessage()
                   for r in caplog.records)

        # /healthz answers in time and says what is down.
        health, took = timed(lambda: Client().get("/healthz"))
        assert took < 2.0, f"/healthz took {took:.1f} s"
        assert health.status_code == 503
        data = health.json()
        assert data["checks"]["broker"].startswith("error:") and "broker" in data["failing"]
        assert data["checks"]["database"] == "ok"

        # The job list comes from the database.
        listed, took = timed(lambda: api["alice"].get("/jobs"))
        assert listed.status_code == 200 and took < BOUND_S, (listed.status_code, took)
        assert [row["name"] for row in listed.json()["results"]] == ["before-the-stall"]

        # The nodes page reads Slurm itself when its cache cannot answer.
        client = Client()
        client.force_login(world["alice"])
        page, took = timed(lambda: client.get("/nodes/"))
        assert page.status_code == 200 and took < BOUND_S, (page.status_code, took)
        assert b"gpu08" in page.content

        # A submit reaches Slurm (or says 503 with Retry-After): never a 500, never a hang.
        script = "#!/bin/bash\ntrue\n"
        submitted, took = timed(lambda: api["alice"].post("/jobs", {"name": "in-the-stall", "team": "vision",
                                                                    "script": script}))
        assert took < 5.0, f"submit took {took:.1f} s"
        assert submitted.status_code in (201, 503), submitted.content
        if submitted.status_code == 503:
            assert submitted.headers.get("Retry-After")
        else:
            assert gateway.get_job(submitted.json()["slurm_job_id"]).name == "in-the-stall"

    # Redis is back: the periodic node check (run by the real worker) decides from the stored
    # report whose own policy task was never sent.
    CACHE_BREAKER.reset()
    BROKER_BREAKER.reset()
    assert not NodeAction.objects.filter(node__name="gpu08").exists()
    result = check_nodes_task.apply_async().get(timeout=60)
    # A fatal finding drains whatever the cap says (an alert comes with it when over the cap).
    action = NodeAction.objects.get(node__name="gpu08", kind="drain")
    assert "Xid 48" in action.reason + action.detail, (action.reason, action.detail)
    assert result["acted"].get("gpu08"), result
