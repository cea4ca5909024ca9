"""Submit rate through the containerised portal (docker/compose.yaml) against the portal run
on the host, in one run (issue 12's target: within 20 % of each other).

- docker: POST /api/v1/jobs through the stack's proxy (nginx, 127.0.0.1:18080) to its gunicorn,
  its PostgreSQL and Redis in containers, slurmrestd and slurmctld in containers; the shipped
  compose settings, nothing changed;
- host: the same requests to a gunicorn on the host against the local cluster (bench/submit.py's
  setup: its own database, the local cluster's slurmrestd) - the non-containerised baseline.

Both submit held jobs as alice, paced at 50/s and then 4 clients back to back, alternating
rounds (`--rounds`), so drift of the machine hits both alike. Both stacks run at once (each is
the other's background load), as they would beside each other on this machine.

    python3 docker/stack.py up            # the stack, once
    .venv/bin/python bench/docker_submit.py [--rounds 3] [--jobs 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docker"))
import stack
import submit
from common import ensure_database, gunicorn, machine

PROXY = "http://127.0.0.1:18080"


def docker_token() -> str:
    def manage(*args: str) -> str:
        return stack.compose("exec", "-T", "--user", "portal", "web", "python3", "manage.py", *args,
                             capture=True).stdout

    manage("seed_demo")
    return manage("issue_token", "alice", "--name", f"bench-{uuid.uuid4().hex[:6]}").strip()


def measure_docker(token: str, args: argparse.Namespace) -> dict:
    tag = uuid.uuid4().hex[:6]
    try:
        submit.submit_all(PROXY, token, 20, 4, f"{tag}w")
        paced = submit.submit_paced(PROXY, token, args.jobs, args.rate, f"{tag}p")
        flat_out = submit.submit_all(PROXY, token, args.jobs, args.clients, tag)
    finally:
        for name in (f"bench-{tag}", f"bench-{tag}w", f"bench-{tag}p"):
            stack.compose("exec", "-T", "slurmctld", "scancel", "-u", "alice", "-n", name, check=False)
    return {"paced": paced, "flat_out": flat_out}


def measure_host(env: dict[str, str], token: str, args: argparse.Namespace) -> dict:
    tag = uuid.uuid4().hex[:6]
    try:
        with gunicorn(env) as base:
            submit.submit_all(base, token, 20, 4, f"{tag}w")
            paced = submit.submit_paced(base, token, args.jobs, args.rate, f"{tag}p")
            flat_out = submit.submit_all(base, token, args.jobs, args.clients, tag)
    finally:
        for name in (f"bench-{tag}", f"bench-{tag}w", f"bench-{tag}p"):
            subprocess.run(["scancel", "-u", "alice", "-n", name], check=False)
    return {"paced": paced, "flat_out": flat_out}


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
    args = parser.parse_args()
    if not stack.all_ready(stack.service_states()):
        sys.exit("the stack is not up: python3 docker/stack.py up")
    env = ensure_database(submit.DB)
    host_token = submit.prepare(env)
    docker_tok = docker_token()
    print(f"machine: {machine()}")
    pooled: dict[str, list[dict]] = {"host": [], "docker": []}
    for round_no in range(1, args.rounds + 1):
        for kind in (("host", "docker") if round_no % 2 else ("docker", "host")):
            result = (measure_host(env, host_token, args) if kind == "host"
                      else measure_docker(docker_tok, args))
            report(f"{kind}, round {round_no} of {args.rounds}", result, args)
            pooled[kind].append(result)
    for kind, results in pooled.items():
        report(f"{kind}, all {args.rounds} rounds pooled", submit.merge([{**r, "sbatch": 1.0} for r in results]),
               args)
    print("  target: the containerised figures within 20 % of the host's")


if __name__ == "__main__":
    main()
