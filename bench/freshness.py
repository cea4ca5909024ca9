"""Benchmark: how long after Slurm changes a job's state the job list API shows it.

Starts a real Celery worker and beat (as `make demo` runs them) on a private queue and a real
gunicorn, against a database of its own (PORTAL_DB_NAME, default portal_bench_trk), submits
20 held jobs as alice with sbatch, then makes 40 state changes: releases each job (PENDING ->
RUNNING) and later cancels it (RUNNING -> CANCELLED). Two threads poll every 50 ms, one
asking Slurm for the job's state and one asking `GET /api/v1/jobs` as alice (through its page
cache, as a live list does), and the latency of a change is the time between Slurm first
showing the new state and the API first showing it. Target: p95 <= 2 s. The worker, beat
and gunicorn are stopped and the jobs cancelled at the end.

    .venv/bin/python bench/freshness.py
"""

from __future__ import annotations

import os
import pwd
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import ensure_database, gunicorn, machine, percentile, start_celery, stop_celery  # noqa: E402

DB = os.environ.setdefault("PORTAL_DB_NAME", "portal_bench_trk")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
QUEUE = f"bench-fresh-{uuid.uuid4().hex[:6]}"
os.environ["PORTAL_CELERY_QUEUE"] = QUEUE  # the worker and beat below inherit it
ensure_database(DB)  # created and migrated when missing
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from portal.api.services import issue_token  # noqa: E402
from portal.jobs.models import Job  # noqa: E402
from portal.jobs.tracking import reset_tracker  # noqa: E402
from portal.teams.models import Team  # noqa: E402
from workers.celery import app  # noqa: E402

JOBS = 20   # 40 changes: with 20, the p95 would simply be the slowest one
POLL_S = 0.05


def setup_rows() -> str:
    """alice in the bench database; returns an API token for her."""
    alice, _ = get_user_model().objects.get_or_create(username="alice")
    Team.objects.get_or_create(name="vision")
    reset_tracker()
    return issue_token(user=alice, name="bench-freshness")[0]


def sbatch_held(name: str) -> int:
    out = subprocess.run(["runuser", "-u", "alice", "--", "sbatch", "--parsable", "--hold", "-A", "vision",
                          "-J", name, "-t", "10", "-o", "/dev/null", "--wrap", "sleep 600"],
                         capture_output=True, text=True, check=True, cwd=pwd.getpwnam("alice").pw_dir)
    return int(out.stdout.strip().split(";")[0])


def slurm_state(job_id: int) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return out


def db_state(job_id: int) -> str:
    return Job.objects.filter(slurm_job_id=job_id).values_list("state", flat=True).first() or ""


class ListApi:
    """alice's job list as a live page polls it, filtered to jobs submitted since the run began.

    Without the filter, alice's jobs left in slurmctld by an earlier benchmark (cancelled
    jobs stay listed for MinJobAge) could be adopted after this run's and push them off the
    first page.
    """

    def __init__(self, base: str, token: str, since: datetime) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.params = {"limit": 50, "submitted_after": since.isoformat()}

    def state(self, job_id: int) -> str:
        rows = self.http.get("/api/v1/jobs", params=self.params).json()["results"]
        return next((row["state"] for row in rows if row["slurm_job_id"] == job_id), "")


def first_seen(read, job_id: int, old: str, found: dict, *, key: str, deadline: float) -> None:
    """Poll `read(job_id)` every POLL_S until it shows a state other than `old`; record when."""
    while time.monotonic() < deadline:
        state = read(job_id)
        if state and state != old:
            found[key] = (time.monotonic(), state)
            return
        time.sleep(POLL_S)


def measure(api: ListApi, job_id: int, old: str, change) -> tuple[float, str, str]:
    """Make `change` and time Slurm's and the list API's first sight of the new state."""
    found: dict = {}
    deadline = time.monotonic() + 60
    threads = [threading.Thread(target=first_seen, args=(slurm_state, job_id, old, found),
                                kwargs={"key": "slurm", "deadline": deadline}),
               threading.Thread(target=first_seen, args=(api.state, job_id, old, found),
                                kwargs={"key": "api", "deadline": deadline})]
    change()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if "api" not in found or "slurm" not in found:
        raise SystemExit(f"job {job_id}: no state change seen within 60 s ({found})")
    return found["api"][0] - found["slurm"][0], found["slurm"][1], found["api"][1]


def wait_adopted(ids: list[int]) -> None:
    deadline = time.monotonic() + 60
    while any(db_state(job_id) != "PENDING" for job_id in ids):
        if time.monotonic() > deadline:
            raise SystemExit("the worker never adopted the held jobs")
        time.sleep(0.2)
    connection.close()


def changes(api: ListApi, ids: list[int]) -> list[tuple[str, int, float, str, str]]:
    samples = []
    for job_id in ids:
        release = lambda j=job_id: subprocess.run(["scontrol", "release", str(j)], check=True)  # noqa: E731
        samples.append(("release", job_id, *measure(api, job_id, "PENDING", release)))
        time.sleep(random.uniform(0.2, 1.2))  # land changes at different points of the beat tick
    for job_id in ids:
        cancel = lambda j=job_id: subprocess.run(["scancel", str(j)], check=True)  # noqa: E731
        samples.append(("cancel", job_id, *measure(api, job_id, "RUNNING", cancel)))
        time.sleep(random.uniform(0.2, 1.2))
    return samples


def report(samples: list[tuple[str, int, float, str, str]]) -> None:
    print(f"\n{'change':8} {'job':>6} {'Slurm showed':14} {'API showed':14} {'latency ms':>10}")
    for kind, job_id, latency, slurm, db in samples:
        print(f"{kind:8} {job_id:6} {slurm:14} {db:14} {latency * 1000:10.0f}")
    values = [s[2] for s in samples]
    print(f"\nSlurm state change -> visible in GET /api/v1/jobs, {len(values)} changes, beat every 1 s:")
    print(f"p50 {percentile(values, 50) * 1000:.0f} ms   p95 {percentile(values, 95) * 1000:.0f} ms   "
          f"max {max(values) * 1000:.0f} ms   mean {statistics.fmean(values) * 1000:.0f} ms   (target p95 <= 2000 ms)")
    print(f"Machine: {machine()}")


def main() -> None:
    token = setup_rows()
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)   # Slurm has whole seconds
    name = f"bench-fresh-{uuid.uuid4().hex[:6]}"
    ids: list[int] = []
    with tempfile.TemporaryDirectory() as workdir, gunicorn(os.environ.copy()) as base:
        procs = start_celery(QUEUE, workdir, os.environ.copy())
        try:
            ids = [sbatch_held(name) for _ in range(JOBS)]
            wait_adopted(ids)
            report(changes(ListApi(base, token, since), ids))
        finally:
            stop_celery(procs, QUEUE, app)
            subprocess.run(["scancel", "-n", name], check=False, capture_output=True)


if __name__ == "__main__":
    main()
