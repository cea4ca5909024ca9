"""Submit rate and latency through POST /api/v1/jobs (targets: >= 50 jobs/s, p95 <= 150 ms).

Each request goes the whole way: token check, validation against the partition limits,
the outbox row in PostgreSQL, a JWT minted for alice, slurmrestd -> slurmctld, and the row
update. Baseline in the same run: `sbatch` in a loop as alice (the CLI path, one process per
job), which SLURM-NOTES measured at about 150 jobs/s. Both submit held jobs, so the figures
measure submission rather than the cluster starting (and prolog-checking) hundreds of jobs.

    .venv/bin/python bench/submit.py [--jobs 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PY, ROOT, ensure_database, gunicorn, machine, summary_ms

DB = "portal_bench_submit"
SETUP = """
from django.contrib.auth import get_user_model
from portal.teams.models import Membership, Team
alice, _ = get_user_model().objects.get_or_create(username="alice")
Membership.objects.get_or_create(user=alice, team=Team.objects.get_or_create(name="vision")[0])
"""


def prepare(env: dict[str, str]) -> str:
    subprocess.run([PY, "manage.py", "shell", "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True)
    return subprocess.run([PY, "manage.py", "issue_token", "alice", "--name", "bench"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


async def submit_all(base: str, token: str, jobs: int, clients: int, tag: str) -> tuple[list[float], list, float]:
    latencies: list[float] = []
    failures: list = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    # Held, so the run measures submission, not the cluster starting hundreds of jobs.
    body = {"name": f"bench-{tag}", "team": "vision", "script": "#!/bin/bash\ntrue\n", "cpus_per_task": 1,
            "time_limit_min": 5, "hold": True}

    async def worker():
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                resp = await http.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": f"{tag}-{i}"})
                latencies.append(time.perf_counter() - started)
                if resp.status_code != 201:
                    failures.append((resp.status_code, resp.text[:200]))
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, failures, time.perf_counter() - started


def sbatch_baseline(jobs: int, tag: str) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        subprocess.run(["runuser", "-u", "alice", "--", "sbatch", "-A", "vision", "-J", f"bench-{tag}", "-o",
                        "/dev/null", "-t", "5", "--hold", "--wrap", "true"], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    env = ensure_database(DB)
    token = prepare(env)
    tag = uuid.uuid4().hex[:6]
    print(f"machine: {machine()}")
    try:
        with gunicorn(env) as base:
            asyncio.run(submit_all(base, token, 10, 2, f"{tag}w"))      # warm up
            latencies, failures, wall = asyncio.run(submit_all(base, token, args.jobs, args.clients, tag))
        base_wall = sbatch_baseline(min(args.jobs, 150), f"{tag}b")
    finally:
        subprocess.run(["scancel", "-u", "alice", "-n", f"bench-{tag},bench-{tag}w,bench-{tag}b"], check=False)
    print(f"POST /api/v1/jobs, {args.jobs} jobs, {args.clients} concurrent clients:")
    print(f"  {args.jobs / wall:.0f} jobs/s  {summary_ms(latencies)}  failures={len(failures)}")
    if failures:
        print(f"  first failure: {failures[0]}")
    print(f"baseline: sbatch loop as alice: {min(args.jobs, 150) / base_wall:.0f} jobs/s")
    print("  targets: >= 50 jobs/s, p95 <= 150 ms")


if __name__ == "__main__":
    main()
