"""Submit rate through the containerised portal (docker/compose.yaml) against the portal run
on the host, in one run (issue 12's target: within 20 % of each other).

Both sides are the shipped configuration with everything they run in the background:
- docker: POST /api/v1/jobs through the stack's proxy (nginx, 127.0.0.1:18080) to its gunicorn;
  its worker and beat track the jobs; PostgreSQL, Redis, slurmrestd and slurmctld in containers;
- host: the demo portal (`make demo`: gunicorn on 127.0.0.1:8000, worker and beat) against the
  local cluster, the non-containerised baseline.

Both submit held jobs as alice, paced at 50/s and then 4 clients back to back, in alternating
rounds (`--rounds`), so drift of the machine hits both alike. Each side is measured alone, as a
site runs one or the other: for a host round the stack's containers are paused (`compose
pause`); for a docker round the demo portal and the local cluster are stopped, and started
again after. `--together` keeps both running throughout instead, each the other's background
load. Before each measurement the bench waits `--settle` seconds, so the workers have tracked
the last round's jobs (each round leaves about 600 cancelled jobs).

    make demo && python3 docker/stack.py up
    .venv/bin/python bench/docker_submit.py [--rounds 3] [--jobs 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docker"))
import stack
import submit
from common import CTL, PY, ROOT, machine

PROXY = "http://127.0.0.1:18080"
DEMO = "http://127.0.0.1:8000"


def docker_token() -> str:
    def manage(*args: str) -> str:
        return stack.compose("exec", "-T", "--user", "portal", "web", "python3", "manage.py", *args,
                             capture=True).stdout

    manage("seed_demo")
    return manage("issue_token", "alice", "--name", f"bench-{uuid.uuid4().hex[:6]}").strip()


def measure(base: str, token: str, args: argparse.Namespace, scancel: list[str]) -> dict:
    tag = uuid.uuid4().hex[:6]
    time.sleep(args.settle)
    try:
        submit.submit_all(base, token, 20, 4, f"{tag}w")      # warm up every worker process
        paced = submit.submit_paced(base, token, args.jobs, args.rate, f"{tag}p")
        flat_out = submit.submit_all(base, token, args.jobs, args.clients, tag)
    finally:
        # One name per scancel: Slurm 22.05 takes "-n a,b" as a single name.
        for name in (f"bench-{tag}", f"bench-{tag}w", f"bench-{tag}p"):
            subprocess.run([*scancel, "scancel", "-u", "alice", "-n", name], check=False, capture_output=True)
    return {"paced": paced, "flat_out": flat_out}


def host_side(up: bool) -> None:
    """The local cluster and the demo portal on it: started, or stopped (they cost CPU idle)."""
    steps = ([[CTL, "up"], ["scripts/portal.sh", "start"]] if up else
             [["scripts/portal.sh", "stop"], [CTL, "down"]])
    for cmd in steps:
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)


def alone(kind: str) -> None:
    if kind == "host":
        stack.compose("pause", capture=True)
        host_side(up=True)
    else:
        host_side(up=False)
        stack.compose("unpause", capture=True)


def demo_token() -> str:
    proc = subprocess.run([PY, "manage.py", "issue_token", "alice", "--name", f"bench-{uuid.uuid4().hex[:6]}"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def report(label: str, result: dict, args: argparse.Namespace) -> None:
    print(f"{label}: POST /api/v1/jobs, {args.jobs} jobs per run")
    for name, (latencies, failures, wall) in ((f"paced at {args.rate:.0f}/s", result["paced"]),
                                              (f"{args.clients} clients back to back", result["flat_out"])):
        print(f"  {name}: {args.jobs / wall:.0f} jobs/s  {submit.summary_ms(latencies)}  "
              f"failures={len(failures)}")
        if failures:
            print(f"    first failure: {failures[0]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait before each measurement")
    parser.add_argument("--together", action="store_true", help="keep both sides running in every round")
    args = parser.parse_args()
    if not stack.all_ready(stack.service_states()):
        sys.exit("the stack is not up: python3 docker/stack.py up")
    try:
        httpx.get(f"{DEMO}/accounts/login/", timeout=5).raise_for_status()
    except httpx.HTTPError:
        sys.exit(f"the demo portal does not answer on {DEMO}: make demo")
    tokens = {"host": demo_token(), "docker": docker_token()}
    in_stack = [*stack.compose_cmd(), "-p", stack.PROJECT, "-f", str(stack.HERE / "compose.yaml"),
                "exec", "-T", "slurmctld"]
    sides = {"host": (DEMO, []), "docker": (PROXY, in_stack)}
    print(f"machine: {machine()}; {'both sides running throughout' if args.together else 'each side alone'}")
    pooled: dict[str, list[dict]] = {"host": [], "docker": []}
    for round_no in range(1, args.rounds + 1):
        for kind in (("host", "docker") if round_no % 2 else ("docker", "host")):
            if not args.together:
                alone(kind)
            base, scancel = sides[kind]
            result = measure(base, tokens[kind], args, scancel)
            report(f"{kind}, round {round_no} of {args.rounds}", result, args)
            pooled[kind].append(result)
    for kind, results in pooled.items():
        report(f"{kind}, all {args.rounds} rounds pooled", submit.merge([{**r, "sbatch": 1.0} for r in results]),
               args)
    if not args.together:
        stack.compose("unpause", check=False, capture=True)
        host_side(up=True)
    print("  target: the containerised figures within 20 % of the host's")


if __name__ == "__main__":
    main()
