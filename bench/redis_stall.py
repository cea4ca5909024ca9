"""Benchmark: what users get while Redis is frozen, and how soon /healthz recovers.

Starts a real gunicorn (as `make demo`: 2 x cores + 1 workers) and a real Celery worker and
beat on a private queue, against a database of its own (PORTAL_DB_NAME, default
portal_bench_stall), waits for /healthz to be 200, then freezes the Redis that
PORTAL_CACHE_URL names (SIGSTOP: it keeps accepting connections and never answers, the
worst case) for STALL_S seconds. Meanwhile it sends, all at once: six signed health reports,
two /healthz, two job lists and a nodes list as alice, and one submit; and a second smaller
round 3 s later. It prints each request's status and time, continues Redis, and prints how
long /healthz took to say 200 again. Refuses to stop a Redis on the default port 6379 (it may
be shared): point PORTAL_*_URL at a Redis of your own.

    .venv/bin/python bench/redis_stall.py [STALL_S, default 20]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import ensure_database, gunicorn, machine, start_celery, stop_celery  # noqa: E402

DB = os.environ.setdefault("PORTAL_DB_NAME", "portal_bench_stall")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
QUEUE = f"bench-stall-{uuid.uuid4().hex[:6]}"
os.environ["PORTAL_CELERY_QUEUE"] = QUEUE  # the worker and beat below inherit it
_KEY_DIR = tempfile.mkdtemp(prefix="bench-stall-")
os.environ["PORTAL_HEALTH_MASTER_KEY_FILE"] = f"{_KEY_DIR}/master.key"
Path(os.environ["PORTAL_HEALTH_MASTER_KEY_FILE"]).write_text(os.urandom(32).hex() + "\n")
ensure_database(DB)
django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402

from portal.api.services import issue_token  # noqa: E402
from portal.nodes.services import sync_nodes  # noqa: E402
from portal.nodes.signing import node_key  # noqa: E402
from portal.teams.models import Membership, Team  # noqa: E402
from slurm_plugins.report import Envelope, post  # noqa: E402
from workers.celery import app  # noqa: E402

STALL_S = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
Result = tuple[str, float, object, str]


def setup_rows() -> str:
    alice, _ = get_user_model().objects.get_or_create(username="alice")
    team, _ = Team.objects.get_or_create(name="vision")
    Membership.objects.get_or_create(user=alice, team=team)
    sync_nodes()
    return issue_token(user=alice, name="bench-stall")[0]


def http(base: str, token: str, method: str, path: str, body: dict | None = None) -> tuple[object, str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(base + path, method=method, headers=headers,  # noqa: S310 (our own http:// base)
                                 data=json.dumps(body).encode() if body else None)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310
            return resp.status, resp.read()[:90].decode(errors="replace")
    except urllib.error.HTTPError as exc:
        retry = exc.headers.get("Retry-After")
        return exc.code, (f"Retry-After {retry} " if retry else "") + exc.read()[:90].decode(errors="replace")


def report(base: str, node: str) -> tuple[object, str]:
    body = {"node": node, "source": "healthcheck", "sent_at": datetime.now(UTC).isoformat(), "job_id": None,
            "findings": [], "spooled": False}
    return post(base, node, Envelope(body), node_key(node).encode(), timeout=2.5)


def run_round(calls: list[tuple[str, object]], results: list[Result]) -> None:
    def timed(name: str, call) -> None:
        start = time.monotonic()
        try:
            status, detail = call()
        except OSError as exc:
            status, detail = "error", repr(exc)
        results.append((name, time.monotonic() - start, status, detail))

    threads = [threading.Thread(target=timed, args=item) for item in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def redis_pid() -> int:
    url = urlparse(settings.CACHES["default"]["LOCATION"])
    if url.port in (None, 6379):
        sys.exit("refusing to freeze the Redis on port 6379 (it may be shared): point PORTAL_*_URL at your own")
    info = redis.Redis(host=url.hostname, port=url.port, password=url.password, socket_timeout=2).info("server")
    return int(info["process_id"])


def wait_healthy(base: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http(base, "", "GET", "/healthz")[0] == 200:
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit(f"/healthz not 200 within {timeout:.0f} s")


def stall(base: str, token: str) -> list[Result]:
    def get(path: str):
        return lambda: http(base, token, "GET", path)

    submit = {"name": "bench-stall", "team": "vision", "script": "#!/bin/bash\ntrue\n"}
    calls = [(f"report {n}", lambda n=n: report(base, n)) for n in ("gpu01", "gpu02", "gpu03", "gpu04", "gpu05")]
    calls += [("/healthz", lambda: http(base, "", "GET", "/healthz"))] * 2
    calls += [("GET /api/v1/jobs", get("/api/v1/jobs"))] * 2 + [("GET /api/v1/nodes", get("/api/v1/nodes"))]
    calls += [("POST /api/v1/jobs", lambda: http(base, token, "POST", "/api/v1/jobs", submit))]
    results: list[Result] = []
    pid = redis_pid()
    os.kill(pid, signal.SIGSTOP)
    start = time.monotonic()
    try:
        run_round(calls, results)
        time.sleep(3)
        run_round([("report gpu06 (2nd round)", lambda: report(base, "gpu06")), calls[5], calls[7]], results)
        time.sleep(max(0.0, STALL_S - (time.monotonic() - start)))
    finally:
        os.kill(pid, signal.SIGCONT)
    return results


def main() -> None:
    token = setup_rows()
    with tempfile.TemporaryDirectory() as workdir, gunicorn(os.environ.copy()) as base:
        procs = start_celery(QUEUE, workdir, os.environ.copy())
        try:
            wait_healthy(base, 60)
            results = stall(base, token)
            recovered = wait_healthy(base, 60)
        finally:
            stop_celery(procs, QUEUE, app)
            subprocess.run(["scancel", "-n", "bench-stall"], check=False, capture_output=True)
    print(f"\nRedis frozen (SIGSTOP) for {STALL_S:.0f} s; {len(results)} requests, the first round all at once:")
    print(f"{'request':26} {'time s':>7}  status  answer")
    for name, took, status, detail in results:
        print(f"{name:26} {took:7.2f}  {status!s:6}  {detail[:70]!r}")
    print(f"\n/healthz 200 again {recovered:.1f} s after Redis continued.")
    print(f"PORTAL_REDIS_TIMEOUT={settings.PORTAL_REDIS_TIMEOUT_S:g} s. Machine: {machine()}")


if __name__ == "__main__":
    main()
