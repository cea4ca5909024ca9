"""Job list latency with 1,000,000 jobs in PostgreSQL and 20 concurrent clients.

Target (issue: researcher portal): p95 <= 100 ms. Serves the portal with a real gunicorn
(2 x cores + 1 single-threaded workers, as `make demo` runs it) against a bench database seeded by
bench/seed_jobs.py, and drives it with 20 concurrent keep-alive clients that list jobs as
alice (her own 50,000), carol (her team's) and admin (everyone's), with and without filters,
and follow the next-page cursor. Three runs: polling about once a second (a live page), back
to back (saturation), and polling again with the page cache off (every request reads
PostgreSQL, as the first poll after one of the user's jobs changed does).

    .venv/bin/python bench/job_list.py [--seconds 20] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PY, ROOT, ensure_database, gunicorn, machine, summary_ms

DB = "portal_bench_list"
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    env = ensure_database(DB)
    subprocess.run([PY, "bench/seed_jobs.py"], cwd=ROOT, env=env, check=True)
    toks = tokens(env)
    print(f"machine: {machine()}")
    with gunicorn(env) as base:
        asyncio.run(drive(base, toks, args.clients, 3))     # warm up connections and caches
        polling = asyncio.run(drive(base, toks, args.clients, args.seconds, interval=1.0))
        flat_out = asyncio.run(drive(base, toks, args.clients, args.seconds))
    # Nothing changes jobs during the run, so above nearly every poll is a cache hit. With
    # the cache off every request builds its page from PostgreSQL: the cost of a poll right
    # after one of the user's jobs changed.
    with gunicorn({**env, "PORTAL_JOB_LIST_CACHE_SECONDS": "0"}) as base:
        asyncio.run(drive(base, toks, args.clients, 3))
        uncached = asyncio.run(drive(base, toks, args.clients, args.seconds, interval=1.0))
    print(f"GET /api/v1/jobs, 1,000,000 jobs, {args.clients} concurrent clients, {args.seconds:.0f} s each:")
    for label, (latencies, errors) in (("each client polling once a second", polling),
                                       ("each client back to back (saturation)", flat_out),
                                       ("polling once a second, page cache off", uncached)):
        rate = len(latencies) / args.seconds
        print(f"  {label}: {summary_ms(latencies)}  throughput={rate:.0f} req/s  errors={len(errors)}"
              + (f" (first: {errors[0]})" if errors else ""))
    print("  target: p95 <= 100 ms")


if __name__ == "__main__":
    main()
