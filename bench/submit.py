"""Submit rate and latency through POST /api/v1/jobs (targets: >= 50 jobs/s, p95 <= 150 ms).

Each request goes the whole way: token check, validation against the partition limits,
the outbox row in PostgreSQL, a JWT minted for alice, slurmrestd -> slurmctld, and the row
update. Two runs against a real gunicorn:

- paced: requests arrive at the target rate (50 a second) whether or not earlier ones have
  returned, as many users clicking would; latency counts from each request's scheduled time,
  so a stall that delays later requests shows in their latency too;
- back to back: 4 clients each submit their next job as soon as the last one returns.

Baseline in the same run: `sbatch` in a loop as alice (the CLI path, one process per job),
which SLURM-NOTES measured at about 150 jobs/s. All submit held jobs, so the figures measure
submission rather than the cluster starting (and prolog-checking) hundreds of jobs.

    .venv/bin/python bench/submit.py [--jobs 300] [--rate 50] [--clients 4]
    .venv/bin/python bench/submit.py --on host --on trixie   # 22.05 and 24.11 in one run
    .venv/bin/python bench/submit.py --on host --on trixie --rounds 3   # alternating, pooled per cluster

`--on SUITE` runs the same against cluster/rootcluster.py's mini cluster of that Debian suite
(started and stopped by the bench): the portal then negotiates that slurmrestd's API version and
runs its CLI half in the root, and the sbatch baseline runs in the root too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid

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
    summary_ms,
)

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


def _body(tag: str) -> dict:
    # Held, so the run measures submission, not the cluster starting hundreds of jobs.
    return {"name": f"bench-{tag}", "team": "vision", "script": "#!/bin/bash\ntrue\n", "cpus_per_task": 1,
            "time_limit_min": 5, "hold": True}


def _submit(base: str, token: str, jobs: int, threads: int, tag: str, *,
            rate: float | None = None) -> tuple[list[float], list, float]:
    """Send `jobs` submissions from `threads` threads; returns latencies, failures, wall time.

    Closed loop without `rate`: each thread sends its next job when the last one returned.
    Open loop with it: job i is due at start + i/rate and sent then, by whichever thread is
    free, on a new connection (many people submitting bring their own); its latency runs
    from when it was due, so waiting for a free thread counts too.
    """
    latencies: list[float] = []
    failures: list = []
    numbers = iter(range(jobs))
    lock = threading.Lock()
    start = time.perf_counter() + (0.1 if rate else 0.0)   # open loop: time to start the threads

    def worker() -> None:
        client = KeepAliveClient(base, {"Authorization": f"Bearer {token}"})
        while True:
            with lock:
                i = next(numbers, None)
            if i is None:
                break
            if rate is None:
                sent = time.perf_counter()
            else:
                sent = start + i / rate
                time.sleep(max(0.0, sent - time.perf_counter()))
                client.close()
            status, text = client.post_json("/api/v1/jobs", _body(tag), {"Idempotency-Key": f"{tag}-{i}"})
            latencies.append(time.perf_counter() - sent)
            if status != 201:
                failures.append((status, text[:200]))
        client.close()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, failures, time.perf_counter() - start


def submit_all(base: str, token: str, jobs: int, clients: int, tag: str) -> tuple[list[float], list, float]:
    """Closed loop: `clients` threads back to back."""
    return _submit(base, token, jobs, clients, tag)


def submit_paced(base: str, token: str, jobs: int, rate: float, tag: str) -> tuple[list[float], list, float]:
    """Open loop: jobs arriving at `rate` a second, up to 32 in flight."""
    return _submit(base, token, jobs, 32, tag, rate=rate)


def sbatch_baseline(jobs: int, tag: str, root: str) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        subprocess.run([*slurm_command(root, "alice"), "sbatch", "-A", "vision", "-J", f"bench-{tag}", "-o",
                        "/dev/null", "-t", "5", "--hold", "--wrap", "true"], check=True, capture_output=True)
    return time.perf_counter() - started


def measure(env: dict[str, str], token: str, args: argparse.Namespace, root: str) -> dict:
    tag = uuid.uuid4().hex[:6]
    try:
        with gunicorn(env) as base:
            submit_all(base, token, 20, 4, f"{tag}w")      # warm up every worker
            paced = submit_paced(base, token, args.jobs, args.rate, f"{tag}p")
            flat_out = submit_all(base, token, args.jobs, args.clients, tag)
        base_wall = sbatch_baseline(min(args.jobs, 150), f"{tag}b", root)
    finally:
        # One name per scancel: Slurm 22.05 takes "-n a,b" as a single name and cancels nothing.
        for name in (f"bench-{tag}", f"bench-{tag}w", f"bench-{tag}p", f"bench-{tag}b"):
            subprocess.run([*slurm_command(root), "scancel", "-u", "alice", "-n", name], check=False)
    return {"paced": paced, "flat_out": flat_out, "sbatch": min(args.jobs, 150) / base_wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--on", action="append", choices=SUITES,
                        help="which cluster (repeat for several in one run); default: host")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each cluster this many times, alternating, and pool the rounds")
    args = parser.parse_args()
    env = ensure_database(DB)
    token = prepare(env)
    print(f"machine: {machine()}")
    pooled: dict[str, list[dict]] = {}
    versions: dict[str, str] = {}
    runs = alternating(args.on or ["host"], args.rounds,
                       lambda extra, root: measure({**env, **extra}, token, args, root))
    for round_no, suite, versions[suite], result in runs:
        report(f"{suite} ({versions[suite]}), round {round_no} of {args.rounds}", result, args)
        pooled.setdefault(suite, []).append(result)
    if args.rounds > 1:
        for suite, results in pooled.items():
            report(f"{suite} ({versions[suite]}), all {args.rounds} rounds pooled", merge(results), args)
    print("  targets: >= 50 jobs/s, p95 <= 150 ms")


def merge(results: list[dict]) -> dict:
    """Rounds as one: latencies and failures joined, wall times added (jobs/s over all rounds)."""
    merged: dict = {}
    for key in ("paced", "flat_out"):
        merged[key] = ([v for r in results for v in r[key][0]], [f for r in results for f in r[key][1]],
                       sum(r[key][2] for r in results) / len(results))
    merged["sbatch"] = len(results) / sum(1 / r["sbatch"] for r in results)
    return merged


def report(label: str, result: dict, args: argparse.Namespace) -> None:
    print(f"{label}: POST /api/v1/jobs, {args.jobs} jobs per run:")
    for name, (latencies, failures, wall) in ((f"paced at {args.rate:.0f}/s", result["paced"]),
                                              (f"{args.clients} clients back to back", result["flat_out"])):
        print(f"  {name}: {args.jobs / wall:.0f} jobs/s  {summary_ms(latencies)}  failures={len(failures)}")
        if failures:
            print(f"    first failure: {failures[0]}")
    print(f"  baseline: sbatch loop as alice: {result['sbatch']:.0f} jobs/s", flush=True)


if __name__ == "__main__":
    main()
