"""Job list latency with 1,000,000 jobs in PostgreSQL and 20 concurrent clients.

Target (issue: researcher portal): p95 <= 100 ms. Serves the portal with a real gunicorn
(2 x cores + 1 single-threaded workers, as `make demo` runs it) against a bench database seeded by
bench/seed_jobs.py, and drives it with 20 concurrent keep-alive clients that list jobs as
alice (her own 50,000), carol (her team's) and admin (everyone's), with and without filters,
and follow the next-page cursor. Three runs: polling about once a second (a live page), back
to back (saturation), and polling again with the page cache off (every request reads
PostgreSQL, as the first poll after one of the user's jobs changed does).

    .venv/bin/python bench/job_list.py [--seconds 20] [--clients 20]
    .venv/bin/python bench/job_list.py --on host --on trixie   # the tracker on 22.05, then on 24.11
    .venv/bin/python bench/job_list.py --on host --on trixie --rounds 2   # host, trixie, host, trixie

`--on SUITE` points the tracker and the submits at cluster/rootcluster.py's mini cluster of that
Debian suite (bench/common.py's cluster_env); the list itself reads PostgreSQL either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    PY,
    ROOT,
    SUITES,
    KeepAliveClient,
    alternating,
    ensure_database,
    gunicorn,
    machine,
    slurm_command,
    start_celery,
    stop_celery,
    summary_ms,
)

DB = "portal_bench_list"
LOAD_TAG = "bench-list-load"
TEAMS = {"alice": "vision", "carol": "nlp"}
SUBMIT_EVERY_S = 0.5
ADMINS = 2
ADMIN_PAGES = ["/jobs/", "/jobs/?state=RUNNING", "/nodes/", "/jobs/rows/"]
QUERIES = [{}, {"state": "RUNNING"}, {"state": "PENDING,RUNNING"}, {"team": "vision"}, {"limit": 100}]


def tokens(env: dict[str, str]) -> dict[str, str]:
    out = {}
    for user in ("alice", "carol", "admin"):
        out[user] = subprocess.run([PY, "manage.py", "issue_token", user, "--name", "bench"], cwd=ROOT, env=env,
                                   capture_output=True, text=True, check=True).stdout.strip()
    return out


async def client(http: httpx.AsyncClient, toks: dict[str, str], deadline: float, latencies: list[float],
                 errors: list, *, interval: float):
    while time.monotonic() < deadline:
        if interval:   # a browser's live list polls on a timer, it does not hammer
            await asyncio.sleep(random.uniform(0.5, 1.5) * interval)
        user = random.choice(list(toks))
        params = dict(random.choice(QUERIES))
        started = time.perf_counter()
        try:
            resp = await http.get("/api/v1/jobs", params=params, headers={"Authorization": f"Bearer {toks[user]}"})
        except httpx.TransportError as exc:   # counted, not fatal: a browser would retry
            errors.append(type(exc).__name__)
            continue
        latencies.append(time.perf_counter() - started)
        if resp.status_code != 200:
            errors.append(resp.status_code)
            continue
        cursor = resp.json()["next_cursor"]
        if cursor and random.random() < 0.3:   # people page on now and then
            started = time.perf_counter()
            resp = await http.get("/api/v1/jobs", params={**params, "cursor": cursor},
                                  headers={"Authorization": f"Bearer {toks[user]}"})
            latencies.append(time.perf_counter() - started)


async def drive(base: str, toks: dict[str, str], clients: int, seconds: float,
                interval: float = 0.0) -> tuple[list[float], list]:
    """`clients` concurrent pollers sharing one pool of `clients` keep-alive connections.

    The pool is made before the clock starts: making an httpx client loads a TLS context
    (tens of ms of CPU), which inside the run would stall the event loop and be counted as
    server latency.
    """
    latencies: list[float] = []
    errors: list = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(client(http, toks, deadline, latencies, errors, interval=interval)
                               for _ in range(clients)))
    return latencies, errors


def admin_login(http: httpx.AsyncClient, password: str):
    """A browser session for admin: the job and node pages are what admins keep open."""
    async def login() -> None:
        page = await http.get("/accounts/login/")
        token = page.cookies.get("csrftoken") or http.cookies.get("csrftoken")
        resp = await http.post("/accounts/login/", data={"username": "admin", "password": password,
                                                         "csrfmiddlewaretoken": token},
                               headers={"Referer": str(page.url)})
        if resp.status_code not in (200, 302) or "sessionid" not in http.cookies:
            raise SystemExit(f"admin login failed: {resp.status_code}")
    return login()


async def admin_pages(base: str, password: str, deadline: float, latencies: list[float], errors: list) -> None:
    """One admin with the job list and node pages open, reloading every 2 s or so."""
    async with httpx.AsyncClient(base_url=base, timeout=10, follow_redirects=True) as http:
        await admin_login(http, password)
        while time.monotonic() < deadline:
            await asyncio.sleep(random.uniform(1, 3))
            started = time.perf_counter()
            page = random.choice(ADMIN_PAGES)
            try:
                resp = await http.get(page)
            except httpx.TransportError as exc:   # counted with the page, not fatal: a browser would retry
                errors.append(f"{type(exc).__name__} on {page} after {time.perf_counter() - started:.1f} s")
                continue
            latencies.append(time.perf_counter() - started)
            if resp.status_code != 200:
                errors.append(resp.status_code)


async def drive_with_admins(base: str, toks: dict[str, str], args, password: str, *, interval: float):
    admin_lat: list[float] = []
    admin_err: list = []
    deadline = time.monotonic() + args.seconds
    api, *_ = await asyncio.gather(drive(base, toks, args.clients, args.seconds, interval),
                                  *(admin_pages(base, password, deadline, admin_lat, admin_err) for _ in range(ADMINS)))
    return api, (admin_lat, admin_err)


def submitter(base: str, toks: dict[str, str], stop: threading.Event, sent: list[int], partition: str) -> None:
    """Real jobs through the API, two a second, as alice and carol: each one is then written by
    the tracker as Slurm runs it (adopted id, RUNNING, COMPLETED, sacct's figures), which moves the
    page-cache versions the pollers read, as on a busy cluster."""
    clients = {user: KeepAliveClient(base, {"Authorization": f"Bearer {toks[user]}"}) for user in ("alice", "carol")}
    while not stop.wait(SUBMIT_EVERY_S):
        user = random.choice(list(clients))
        body = {"name": LOAD_TAG, "team": TEAMS[user], "partition": partition, "cpus_per_task": 1,
                "time_limit_min": 1, "script": "#!/bin/bash\nsleep 2\n"}
        try:
            status, _ = clients[user].post_json("/api/v1/jobs", body, {"Idempotency-Key": uuid.uuid4().hex})
        except OSError:
            status = 0
        sent.append(status)


@contextmanager
def writers(base: str, toks: dict[str, str], partition: str):
    stop, sent = threading.Event(), []
    thread = threading.Thread(target=submitter, args=(base, toks, stop, sent, partition), daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join()


def show(label: str, result, seconds: float) -> None:
    latencies, errors = result
    rate = len(latencies) / seconds
    print(f"  {label}: {summary_ms(latencies)}  throughput={rate:.0f} req/s  errors={len(errors)}"
          + (f" (first: {errors[0]})" if errors else ""))


def show_all(results: dict[str, tuple], seconds: float) -> None:
    for label, result in results.items():
        if label.startswith("submits"):
            codes = result[0]
            print(f"  {label}: {len(codes)} sent, " + ", ".join(f"{c}: {codes.count(c)}" for c in sorted(set(codes))))
        else:
            show(label, result, seconds)


def pool(into: dict[str, tuple], results: dict[str, tuple]) -> None:
    for label, (values, errors) in results.items():
        old_values, old_errors = into.get(label, ([], []))
        into[label] = ([*old_values, *values], [*old_errors, *errors])


def run(env: dict[str, str], toks: dict[str, str], args, password: str, partition: str) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    with gunicorn(env) as base:
        asyncio.run(drive(base, toks, args.clients, 3))     # warm up connections and caches
        out["quiet: polling once a second, no writers (baseline)"] = asyncio.run(
            drive(base, toks, args.clients, args.seconds, interval=1.0))
        with writers(base, toks, partition) as sent:
            asyncio.run(drive(base, toks, args.clients, 3))
            api, admin = asyncio.run(drive_with_admins(base, toks, args, password, interval=1.0))
            out["busy: polling once a second, tracker + submits + admin pages"] = api
            out[f"busy: admin pages ({ADMINS} admins reloading every ~2 s)"] = admin
            api, _ = asyncio.run(drive_with_admins(base, toks, args, password, interval=0.0))
            out["busy: back to back (saturation), tracker + submits + admin pages"] = api
        out["submits during the busy runs (2 a second): statuses"] = (sent, [])
    # With the cache off every request builds its page from PostgreSQL: the cost of a poll right
    # after one of the user's jobs changed.
    with gunicorn({**env, "PORTAL_JOB_LIST_CACHE_SECONDS": "0"}) as base, writers(base, toks, partition):
        asyncio.run(drive(base, toks, args.clients, 3))
        api, _ = asyncio.run(drive_with_admins(base, toks, args, password, interval=1.0))
        out["busy, PORTAL_JOB_LIST_CACHE_SECONDS=0: polling once a second"] = api
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--on", action="append", choices=SUITES,
                        help="which cluster the tracker and the submits use (repeat for several in one run); "
                             "default: host")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each cluster this many times, alternating, and pool the rounds")
    args = parser.parse_args()
    env = {**ensure_database(DB), "PORTAL_LOG_LEVEL": "WARNING"}
    subprocess.run([PY, "bench/seed_jobs.py"], cwd=ROOT, env=env, check=True)
    toks, password = tokens(env), admin_password(env)
    print(f"machine: {machine()}")
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from workers.celery import app  # noqa: PLC0415 - needs the bench's environment first
    pooled: dict[str, dict[str, tuple]] = {}
    versions: dict[str, str] = {}
    runs = alternating(args.on or ["host"], args.rounds,
                       lambda extra, root: on_cluster({**env, **extra}, root, toks, args, password=password, app=app))
    for round_no, suite, versions[suite], results in runs:
        print(f"{suite} ({versions[suite]}), round {round_no} of {args.rounds}: GET /api/v1/jobs, "
              f"1,000,000 jobs, {args.clients} concurrent clients, {args.seconds:.0f} s each:")
        show_all(results, args.seconds)
        pool(pooled.setdefault(suite, {}), results)
    if args.rounds > 1:
        for suite, results in pooled.items():
            print(f"{suite} ({versions[suite]}), all {args.rounds} rounds pooled:")
            show_all(results, args.seconds * args.rounds)
    print("  target: p95 <= 100 ms")


def on_cluster(env: dict[str, str], root: str, toks: dict[str, str], args, *, password: str, app) -> dict:
    """The runs with the real tracker (every second) and the submits going to this cluster."""
    queue = f"bench-list-{uuid.uuid4().hex[:6]}"
    env = {**env, "PORTAL_CELERY_QUEUE": queue}
    # The root's mini cluster has no "cpu" partition; "debug" is its CPU-job one.
    partition = "debug" if root else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        procs = start_celery(queue, tmp, env)
        try:
            return run(env, toks, args, password, partition)
        finally:
            stop_celery(procs, queue, app)
            subprocess.run([*slurm_command(root), "scancel", "-n", LOAD_TAG], check=False, capture_output=True)


def admin_password(env: dict[str, str]) -> str:
    password = uuid.uuid4().hex
    code = ("from django.contrib.auth import get_user_model as g; import sys; "
            "u = g().objects.get(username='admin'); u.set_password(sys.stdin.read()); u.save()")
    subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, input=password, text=True, check=True)
    return password


if __name__ == "__main__":
    main()
