"""Benchmark: fault injected -> node DRAIN in Slurm, with the portal up (target p95 <= 5 s).

The whole path, with real parts: `./cluster/ctl fault gpu0X --xid 79` breaks an emulated GPU; the
node's health check (slurmd runs it every HealthCheckInterval = 3 s) finds it and sends a signed
report to a real gunicorn; the intake stores it and enqueues apply_node_policy_task; a real Celery
worker (a subprocess on a private queue) decides and drains the node with scontrol. The time is
from the fault until `sinfo` shows the node drained. Then `ctl heal` and the policy itself resumes
the node after 3 clean checks (also timed). 20 trials, alternating gpu07 and gpu08.

The sensors find the portal's URL in cluster/state/etc/health.conf, which `./cluster/ctl up`
writes from PORTAL_HEALTH_URL: the bench points it at its own gunicorn for the run and puts the
previous URL back at the end (also on Ctrl-C). Database: PORTAL_DB_NAME, default
portal_bench_drain. Anchor: NHC run by Slurm every HealthCheckInterval=300 s, its usual setting.

    .venv/bin/python bench/drain.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import (  # noqa: E402
    CTL,
    ensure_database,
    gunicorn,
    machine,
    percentile,
    point_sensors,
    portal_url,
    sinfo,
    start_celery,
    stop_celery,
    wait_for,
)

DB = os.environ.setdefault("PORTAL_DB_NAME", "portal_bench_drain")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
QUEUE = f"bench-drain-{uuid.uuid4().hex[:6]}"
os.environ["PORTAL_CELERY_QUEUE"] = QUEUE  # gunicorn enqueues there; the worker below consumes it
ENV = ensure_database(DB)
django.setup()

from django.utils import timezone  # noqa: E402

from portal.nodes.models import HealthReport, NodeAction  # noqa: E402
from portal.nodes.services import AUTO_PREFIX, sync_nodes  # noqa: E402
from portal.slurm import gateway  # noqa: E402
from workers.celery import app  # noqa: E402

NODES = ("gpu07", "gpu08")
TRIALS = 20
ANCHOR_S = 300


# Beat's check_nodes_task (every 10 s) is what resumes a node the hooks drained themselves;
# the job tracker is slowed to once an hour, as it has nothing to do here.
CELERY_ENV = {"PORTAL_CELERY_QUEUE": QUEUE, "PORTAL_TRACK_SECONDS": "3600"}


def back_in_service(node: str) -> None:
    """Healthy GPUs, and the node resumed if a portal: drain (ours) is still on it."""
    subprocess.run([CTL, "heal", node], check=True, capture_output=True)
    state, reason = sinfo(node)
    if state.startswith("drain") and reason.startswith(AUTO_PREFIX):
        gateway.resume_node(node)


def trial(node: str) -> tuple[float | None, float | None, str]:
    """(fault -> DRAIN seconds, heal -> resumed-by-policy seconds, who drained: policy or hook)."""
    sync_nodes()  # the cap reads the node table: let it see the previous trial's resume
    # The previous trial ended just after a health check (the resume); without a random pause every
    # fault would land at the same point of the 3 s cycle.
    time.sleep(random.uniform(0, 3))
    fault_at = timezone.now()
    started = time.monotonic()
    subprocess.run([CTL, "fault", node, "--xid", "79"], check=True, capture_output=True)
    drained = wait_for(lambda: sinfo(node)[0].startswith("drain"), 60)
    latency = None if drained is None else time.monotonic() - started
    time.sleep(0.5)  # let the worker's NodeAction row land before asking who drained
    # The policy records its drain; a hook (a job's prolog/epilog, or a health check whose report
    # the portal did not take within its 0.5 s timeout) drains the node itself, unrecorded.
    by = "policy" if NodeAction.objects.filter(node__name=node, kind="drain", at__gte=fault_at).exists() else "hook"
    subprocess.run([CTL, "heal", node], check=True, capture_output=True)
    resumed = wait_for(lambda: not sinfo(node)[0].startswith("drain"), 60)
    if resumed is None:
        back_in_service(node)
    return latency, resumed, by


def refuse_foreign_drains() -> None:
    for node in NODES:
        state, reason = sinfo(node)
        if state.startswith("drain") and not reason.startswith(AUTO_PREFIX):
            raise SystemExit(f"{node} is drained by someone else ({reason}); not benchmarking on it")


def report(results: list[tuple[float | None, float | None, str]]) -> None:
    every = [r[0] for r in results if r[0] is not None]
    by_policy = [r[0] for r in results if r[0] is not None and r[2] == "policy"]
    resumes = [r[1] for r in results if r[1] is not None]
    print(f"machine: {machine()}")
    print(f"fault -> DRAIN (ctl fault --xid 79, portal up, HealthCheckInterval=3 s), {len(every)} of {TRIALS}:")
    for label, values in (("every trial", every), (f"drained by the policy ({len(by_policy)})", by_policy)):
        print(f"  {label}: p50 {percentile(values, 50):.2f} s   p95 {percentile(values, 95):.2f} s   "
              f"max {max(values, default=float('nan')):.2f} s   (target p95 <= 5 s)")
    print(f"  anchor: NHC from Slurm at HealthCheckInterval={ANCHOR_S} s: up to {ANCHOR_S} s "
          f"({ANCHOR_S / 2:.0f} s on average)")
    print(f"heal -> resumed by the policy: p50 {percentile(resumes, 50):.1f} s   p95 {percentile(resumes, 95):.1f} s   "
          f"({len(resumes)} of {TRIALS} resumed automatically)")
    if len(every) < TRIALS:
        print(f"{TRIALS - len(every)} trials did not drain within 60 s")


def run_trials() -> list[tuple[float | None, float | None, str]]:
    results = []
    for i in range(TRIALS):
        latency, resumed, by = trial(NODES[i % 2])
        print(f"trial {i + 1:2d} {NODES[i % 2]}: drained by the {by} "
              f"{'(timeout)' if latency is None else f'in {latency:.2f} s'}, resumed "
              f"{'by hand' if resumed is None else f'{resumed:.1f} s after heal'}", flush=True)
        results.append((latency, resumed, by))
    return results


def main() -> None:
    refuse_foreign_drains()
    previous = portal_url()
    with tempfile.TemporaryDirectory() as workdir:
        procs = start_celery(QUEUE, workdir, ENV | CELERY_ENV)
        try:
            with gunicorn(ENV) as base:
                pointed_at = timezone.now()
                point_sensors(base)
                # Warm-up: fresh reports from both nodes (a cold gunicorn worker may miss the sensor's 0.5 s).
                wait_for(lambda: HealthReport.objects.filter(node__name__in=NODES, received_at__gte=pointed_at)
                         .values("node").distinct().count() == len(NODES), 30)
                time.sleep(10)
                results = run_trials()
        finally:
            point_sensors(previous)
            stop_celery(procs, QUEUE, app)
            for node in NODES:
                back_in_service(node)
    report(results)


if __name__ == "__main__":
    main()
