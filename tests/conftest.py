"""Session fixtures: the real cluster, the real PostgreSQL test DB, Redis and a Celery worker.

Nothing here is mocked. `make test` brings the cluster up first; if it is not up, the
`cluster` fixture starts it (./cluster/ctl up is idempotent).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from portal.infra.cache import CACHE_BREAKER
from portal.infra.handoff import BROKER_BREAKER
from portal.jobs import cluster_info, list_cache
from portal.quotas import coordinators
from portal.slurm import gateway
from tests.polling import wait_until  # noqa: F401 - the test modules import it from here
from workers.celery import app

ROOT = Path(__file__).resolve().parent.parent
DEMO_TEAMS = {"vision": ["alice", "bob"], "nlp": ["carol", "erin"]}
TEAM_LEADS = {"nlp": "carol"}


@pytest.hookimpl(trylast=True)   # after pytest-django's own reordering by database use
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `late` need jobs that ended more than MinJobAge (5 min) ago, which a cluster
    started for this session has only after a while: run them last, when the rest has made some."""
    items.sort(key=lambda item: item.get_closest_marker("late") is not None)   # stable: order kept otherwise


def _cluster_up() -> bool:
    proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and "UP" in proc.stdout


@pytest.fixture(scope="session")
def cluster() -> Path:
    if not _cluster_up():
        subprocess.run([str(ROOT / "cluster/ctl"), "up"], check=True)
    return ROOT / "cluster"


@pytest.fixture(scope="session")
def slurm_accounts(cluster, django_db_blocker):
    """The demo teams as Slurm accounts with their members' associations."""
    with django_db_blocker.unblock():
        for team, users in DEMO_TEAMS.items():
            gateway.ensure_account(team)
            for user in users:
                gateway.ensure_association(user, team)
        for team, lead in TEAM_LEADS.items():
            gateway.ensure_coordinator(lead, team)
    return DEMO_TEAMS


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Tests make many users; the production hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Every test starts with no cached job-list pages and no process copy of the partition
    limits. A rolled-back test leaves its pages behind, still matching their versions though
    its rows are gone; and a test that makes Slurm unreachable must not get yesterday's limits."""
    list_cache.clear()
    cluster_info.forget()
    coordinators.forget()  # each test's first reconcile reads every coordinator
    # A test that made Redis fail must not leave the next one skipping it.
    CACHE_BREAKER.reset()
    BROKER_BREAKER.reset()


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(username=username, password="pw-" + username, **extra)
    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def charlie(make_user):
    """A portal user with no team and no Unix account: can see nothing, run nothing."""
    return make_user("charlie")


@pytest.fixture
def admin_user(make_user):
    return make_user("admin", is_staff=True, is_superuser=True)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def celery_worker_session(cluster, django_db_blocker):
    """A real Celery worker (in-process thread) on Redis, on a queue of its own.

    Its own queue keeps a demo worker on the same Redis from stealing test tasks.
    """
    queue = f"test-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    with django_db_blocker.unblock(), start_worker(app, pool="solo", concurrency=1, queues=[queue],
                                                    perform_ping_check=False, loglevel="WARNING") as worker:
        yield worker


@pytest.fixture
def celery_settled(transactional_db, celery_worker_session):
    """The worker, for tests whose writes queue tasks: before the test's tables are flushed,
    wait for those tasks; a task still writing while the flush truncates tables deadlocks."""
    yield celery_worker_session
    queue = app.conf.task_default_queue
    broker = redis.Redis.from_url(app.conf.broker_url)
    deadline = time.monotonic() + 20
    while broker.llen(queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)   # the task taken last may still be running
