"""The web server as scripts/portal.sh starts it: errors reach var/log, a stalled or locked
database ends a request within the timeouts instead of holding it."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import subprocess
import time

import httpx
import pytest

from portal.logfiles import SharedRotatingFileHandler
from tests.core.deploy_support import Deployment, Web

# Shaped like a real token (portal.api.services.TOKEN_PREFIX), so its check reads the database.
BOGUS = {"Authorization": "Bearer cpt_" + "0" * 43}


@pytest.fixture(scope="module")
def deployment():
    deployment = Deployment.create()
    proc = deployment.services("start")
    assert proc.returncode == 0, proc.stderr
    proc = deployment.manage("migrate", "--noinput")
    assert proc.returncode == 0, proc.stderr
    yield deployment
    deployment.destroy()


@pytest.fixture
def web(deployment, tmp_path):
    web = Web(deployment, log_dir=tmp_path / "log", settings_module="tests.core.deploy_settings")
    web.start()
    yield web
    web.stop()


def test_an_error_inside_django_leaves_its_traceback_in_the_log(web):
    response = httpx.get(f"{web.url}/deploy-test/boom", timeout=10)
    assert response.status_code == 500
    log = (web.log_dir / "web.log").read_text()
    assert "Internal Server Error: /deploy-test/boom" in log
    assert "Traceback" in log
    assert "RuntimeError: deploy-test: an unexpected error inside a view" in log
    # gunicorn writes the access line after the response has gone out, so the client can read
    # the file a moment before the line lands (seen once in a clean-clone run).
    assert _eventually_in(web.log_dir / "web-access.log", "GET /deploy-test/boom")


def _eventually_in(path, text, within=5.0):
    deadline = time.monotonic() + within
    while True:
        if path.exists() and text in path.read_text():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_gunicorn_records_its_own_start_in_the_log(web):
    assert "Booting worker with pid" in (web.log_dir / "web.log").read_text()


def test_a_frozen_database_ends_a_request_within_the_connect_timeout(deployment, web):
    """The whole instance stopped (postmaster and backends), as in a host stall: the worker's
    first query opens a connection, which gives up after PORTAL_DB_CONNECT_TIMEOUT (3 s)."""
    deployment.signal_postgres(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = httpx.get(f"{web.url}/api/v1/jobs", headers=BOGUS, timeout=30)
        took = time.monotonic() - started
    finally:
        deployment.signal_postgres(signal.SIGCONT)
    assert response.status_code >= 500
    assert 2 <= took < 6, f"took {took:.1f} s"
    # ...and once the database is back, so is the portal.
    assert httpx.get(f"{web.url}/api/v1/jobs", headers=BOGUS, timeout=30).status_code == 401


def test_a_locked_table_ends_a_request_within_the_lock_timeout(deployment, web):
    """A session holding a lock for 60 s must not hold the request for 60 s."""
    env = {"PGPASSWORD": deployment.secret("db_password")}
    holder = subprocess.Popen(
        ["psql", "-h", "127.0.0.1", "-p", str(deployment.pg_port), "-U", "portal", "-d", "portal",
         "-X", "-c", "begin; lock table api_apitoken in access exclusive mode; select pg_sleep(60);"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)   # let it take the lock
        started = time.monotonic()
        response = httpx.get(f"{web.url}/api/v1/jobs", headers=BOGUS, timeout=60)
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert response.status_code >= 500
    assert took < 8, f"took {took:.1f} s"


def _write_lines(path: str, tag: str, count: int) -> None:
    logger = logging.getLogger(f"rotation-{tag}")
    logger.propagate = False
    logger.addHandler(SharedRotatingFileHandler(path, max_bytes=2000, backup_count=1000))
    for i in range(count):
        logger.warning("%s line %04d %s", tag, i, "x" * 40)


def test_processes_sharing_a_log_file_rotate_it_without_losing_lines(tmp_path):
    path = str(tmp_path / "web.log")
    procs = [multiprocessing.get_context("fork").Process(target=_write_lines, args=(path, tag, 300))
             for tag in ("a", "b", "c")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    files = sorted(tmp_path.glob("web.log*"))
    lines = [line for f in files if not f.name.endswith(".lock") for line in f.read_text().splitlines()]
    assert len([f for f in files if not f.name.endswith(".lock")]) > 10   # it did rotate
    assert sorted(lines) == sorted(f"{tag} line {i:04d} {'x' * 40}" for tag in "abc" for i in range(300))
    assert all(f.stat().st_size <= 2000 for f in files)
