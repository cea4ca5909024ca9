"""The portal's database and broker are closed to the jobs that run on the same machine.

scripts/services.sh runs the project's own PostgreSQL and Redis; a job runs as its user
(alice here) and must reach neither without the passwords, which only root can read.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.core.deploy_support import Deployment


@pytest.fixture(scope="module")
def deployment():
    deployment = Deployment.create()
    proc = deployment.services("start")
    assert proc.returncode == 0, proc.stderr
    yield deployment
    deployment.destroy()


def as_alice(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # env -i: a job's environment holds no password of the portal's.
    return subprocess.run(["runuser", "-u", "alice", "--", "env", "-i", *(env or {}).values(), *args],
                          capture_output=True, text=True, timeout=30, check=False, cwd="/")


def psql(deployment: Deployment, user: str, sql: str, password: str = "") -> list[str]:
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    proc = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(deployment.pg_port), "-U", user,
                           "-d", "portal", "-w", "-X", "-tAc", sql],
                          capture_output=True, text=True, timeout=30, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize("role", ["portal", "postgres"])
def test_a_job_cannot_connect_to_the_database_without_the_password(deployment, role):
    proc = as_alice("psql", "-h", "127.0.0.1", "-p", str(deployment.pg_port), "-U", role,
                    "-d", "portal", "-w", "-c", "select 1")
    assert proc.returncode != 0
    assert "no password supplied" in proc.stderr


def test_a_wrong_password_is_refused(deployment):
    proc = as_alice("psql", "-h", "127.0.0.1", "-p", str(deployment.pg_port), "-U", "portal",
                    "-d", "portal", "-w", "-c", "select 1", env={"pw": "PGPASSWORD=guess"})
    assert proc.returncode != 0
    assert "password authentication failed" in proc.stderr


def test_a_job_cannot_use_the_administration_socket(deployment):
    proc = as_alice("psql", "-h", str(deployment.var / "pg"), "-p", str(deployment.pg_port),
                    "-U", "postgres", "-d", "portal", "-w", "-c", "select 1")
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr


def test_a_job_cannot_use_redis_without_the_password(deployment):
    proc = as_alice("redis-cli", "-h", "127.0.0.1", "-p", str(deployment.redis_port), "ping")
    assert "NOAUTH" in proc.stdout + proc.stderr
    proc = as_alice("redis-cli", "-h", "127.0.0.1", "-p", str(deployment.redis_port), "get", "x")
    assert "NOAUTH" in proc.stdout + proc.stderr


def test_redis_answers_with_the_password(deployment):
    proc = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(deployment.redis_port), "ping"],
                          env={**os.environ, "REDISCLI_AUTH": deployment.secret("redis_password")},
                          capture_output=True, text=True, timeout=10, check=False)
    assert proc.stdout.strip() == "PONG"


@pytest.mark.parametrize("name", ["db_password", "redis_password", "redis/redis.conf"])
def test_a_job_cannot_read_the_passwords(deployment, name):
    path = deployment.var / name
    assert path.stat().st_mode & 0o777 == 0o600
    proc = as_alice("cat", str(path))
    assert proc.returncode != 0 and proc.stdout == ""


def test_the_portal_role_is_not_a_superuser(deployment):
    password = deployment.secret("db_password")
    row = psql(deployment, "portal", "select rolsuper, rolcreaterole, rolcreatedb from pg_roles "
                                     "where rolname = current_user", password)
    assert row == ["f|f|t"]


def test_the_portal_role_can_create_a_test_database(deployment):
    """pytest-django creates test_<name> as the portal's role: that is why it has CREATEDB."""
    password = deployment.secret("db_password")
    psql(deployment, "portal", "create database test_deploy_check", password)
    assert psql(deployment, "portal", "select datname from pg_database where datname = 'test_deploy_check'",
                password) == ["test_deploy_check"]
    psql(deployment, "portal", "drop database test_deploy_check", password)


def test_the_server_allows_no_trust_authentication(deployment):
    hba = (deployment.var / "pg/pg_hba.conf").read_text()
    methods = {line.split()[-1] for line in hba.splitlines() if line.strip() and not line.startswith("#")}
    assert methods == {"scram-sha-256", "peer"}
    assert psql(deployment, "portal", "show password_encryption", deployment.secret("db_password")) \
        == ["scram-sha-256"]


def test_settings_default_to_the_projects_instances_and_their_passwords(deployment):
    """With no PORTAL_DB_*/PORTAL_*_URL set, settings find the instances and the var/ files."""
    code = ("from django.db import connection\n"
            "from django.core.cache import cache\n"
            "from workers.celery import app\n"
            "cur = connection.cursor()\n"
            "cur.execute('select current_user, current_setting(%s), current_setting(%s)',"
            " ['statement_timeout', 'lock_timeout'])\n"
            "print(*cur.fetchone())\n"
            "cache.set('deploy-check', 'cached'); print(cache.get('deploy-check'))\n"
            "conn = app.connection_for_write(); conn.ensure_connection(max_retries=1); print('broker')\n")
    proc = deployment.manage("shell", "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-5:] == ["portal", "10s", "5s", "cached", "broker"]


def test_start_twice_is_harmless(deployment):
    postmaster = deployment.postgres_pids()[0]
    proc = deployment.services("start")
    assert proc.returncode == 0, proc.stderr
    assert "starting" not in proc.stdout
    assert deployment.postgres_pids()[0] == postmaster


def test_an_unreachable_var_directory_fails_at_once_with_the_fix(tmp_path):
    """tmp_path sits under /tmp/pytest-of-root (mode 700): postgres cannot traverse it."""
    locked = Deployment(var=tmp_path / "var")
    proc = locked.services("start")
    assert proc.returncode != 0
    assert "not reachable by the postgres user" in proc.stderr
    assert "chmod o+x" in proc.stderr
    assert not (tmp_path / "var/pg").exists()


def test_a_port_taken_by_another_postgresql_is_named(deployment):
    """Another server (the machine's, another checkout's) on our port: say so, do not use it."""
    other = Deployment.create()
    other.pg_port = deployment.pg_port
    try:
        proc = other.services("start")
        assert proc.returncode != 0
        assert f"127.0.0.1:{deployment.pg_port} is taken by another PostgreSQL" in proc.stderr
    finally:
        other.destroy()


def test_a_frozen_redis_costs_the_cache_and_a_task_hand_off_seconds_not_a_hang(deployment):
    """Redis stopped (SIGSTOP: connections are accepted by the kernel, never answered): the
    cache gives up after PORTAL_REDIS_TIMEOUT (a miss, not an error: portal/infra/cache.py); a
    task hand-off (result subscription, then
    the publish, tried twice) within a few of those. It took 63 s with Celery's defaults."""
    code = ("import time\n"
            "from django.core.cache import cache\n"
            "from workers.celery import app\n"
            "for name, call in (('cache', lambda: cache.get('k')),\n"
            "                   ('publish', lambda: app.send_task('workers.tasks.none'))):\n"
            "    start = time.monotonic()\n"
            "    try:\n"
            "        call()\n"
            "        outcome = 'answered'\n"
            "    except Exception as exc:\n"
            "        outcome = type(exc).__name__\n"
            "    print(name, round(time.monotonic() - start, 1), outcome)\n")
    pid = int((deployment.var / "redis/redis.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        proc = deployment.manage("shell", "-c", code)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert proc.returncode == 0, proc.stderr
    took = {line.split()[0]: float(line.split()[1]) for line in proc.stdout.splitlines()
            if line.split()[:1] in (["cache"], ["publish"])}
    assert set(took) == {"cache", "publish"}, proc.stdout
    assert took["cache"] < 3
    assert took["publish"] < 8
