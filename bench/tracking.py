"""Benchmark: one tracking cycle with 100,000 jobs known in PostgreSQL and 1,000 changed in Slurm.

Runs against the live local cluster and a database of its own (PORTAL_DB_NAME, default
portal_bench_trk; created and migrated when missing). It inserts 99,000 finished jobs, submits
1,000 held jobs as alice with plain sbatch, lets the tracker adopt them, then changes all
1,000 twice (release: reason JobHeldUser -> BeginTime; cancel: PENDING -> CANCELLED) and
times the cycle that picks each change up. slurmctld's RPC counters (sdiag) are read before
and after every timed cycle. In the same run it times the naive alternative, parsing the
whole queue as JSON. Everything it submitted is cancelled at the end.

    .venv/bin/python bench/tracking.py
    .venv/bin/python bench/tracking.py --on host --on trixie   # 22.05, then 24.11, one after the other

`--on SUITE` runs it against cluster/rootcluster.py's mini cluster of that Debian suite (the
portal negotiates its slurmrestd's API version and runs its CLI half in the root; the bench's
own sbatch, scontrol, squeue and sdiag run there too). Several `--on` run one process each.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import SUITES, cluster_env, ensure_database, machine, slurm_command, stop_cluster  # noqa: E402


def _suites() -> list[str]:
    """The --on choices, read before Django loads settings (they select the cluster)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--on", action="append", choices=SUITES, help="which cluster (repeatable); default: host")
    return parser.parse_args().on or ["host"]


SUITE_LIST = _suites()
if len(SUITE_LIST) > 1:   # one process per cluster: each loads its own settings
    for each in SUITE_LIST:
        subprocess.run([sys.executable, __file__, "--on", each], check=False)
    sys.exit(0)
SUITE = SUITE_LIST[0]
_EXTRA, CLI_ROOT, SLURM_VERSION = cluster_env(SUITE)
os.environ.update(_EXTRA)

DB = os.environ.setdefault("PORTAL_DB_NAME", "portal_bench_trk")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
ensure_database(DB)  # created and migrated when missing
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from portal.jobs import tracking  # noqa: E402
from portal.jobs.models import Job  # noqa: E402
from portal.slurm import gateway  # noqa: E402
from portal.teams.models import Team  # noqa: E402

KNOWN = 100_000
CHANGED = 1_000
TAG = f"bench-{uuid.uuid4().hex[:6]}"
# A Slurm account (and portal team) of the benchmark's own: other people's jobs on the shared
# cluster stay in the queue the tracker reads, as unmanaged jobs, but cause no writes.
ACCOUNT = "benchtrk"


@dataclass
class Measure:
    case: str
    queries: str
    wall_ms: float
    cpu_ms: float           # this (portal) process: time.process_time
    child_cpu_ms: float     # the squeue/sacct it ran, for completeness
    rpcs: dict[str, int]
    note: str = ""


# ---------------------------------------------------------------- setup

def reset_rows() -> tuple[object, object]:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_jobevent, jobs_job RESTART IDENTITY CASCADE")
    Team.objects.exclude(name=ACCOUNT).delete()
    user, _ = get_user_model().objects.get_or_create(username="alice")
    team, _ = Team.objects.get_or_create(name=ACCOUNT)
    gateway.ensure_account(ACCOUNT, description="tracking benchmark")
    gateway.ensure_association("alice", ACCOUNT)
    return user, team


def remove_account() -> None:
    """Best effort: Slurm refuses while it still holds the account's jobs; a rerun reuses it."""
    for args in (["user", "alice", "where", f"account={ACCOUNT}"], ["account", ACCOUNT]):
        subprocess.run([*slurm_command(CLI_ROOT), "sacctmgr", "-i", "remove", *args], capture_output=True,
                       check=False)


_COPY_COLUMNS = ("uuid", "slurm_job_id", "name", "partition", "script", "state", "reason", "submit_time",
                 "start_time", "end_time", "nodes", "gpus_per_node", "gpu_type", "cpus_per_task", "mem_mb",
                 "time_limit_min", "requeue", "checkpoint_dir", "nodes_list", "exit_code", "restart_count",
                 "working_dir", "stdout_path", "stderr_path", "elapsed_s", "cpu_time_s", "accounted",
                 "adopted", "state_changed_at", "created_at", "updated_at", "owner_id", "team_id",
                 "pending_action")


def _history_row(i: int, owner_id: int, team_id: int, now: datetime) -> tuple:
    state = random.choices(["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"], [70, 15, 10, 5])[0]
    submit = now - timedelta(days=90) + timedelta(seconds=i * 77)
    start, end = submit + timedelta(seconds=30), submit + timedelta(seconds=30 + i % 7200)
    return (uuid.uuid4(), 10_000_000 + i, f"train-{i}", "gpu", "", state, "", submit, start, end, 1, 4,
            "h100", 8, 32768, 240, True, "", f"gpu0{i % 8 + 1}", 0 if state == "COMPLETED" else 1, 0,
            "/home/alice", f"/home/alice/slurm-{i}.out", f"/home/alice/slurm-{i}.err", i % 7200,
            8 * (i % 7200), True, False, end, submit, end, owner_id, team_id, "")


def insert_history(owner, team, count: int) -> float:
    """COPY `count` finished, accounted jobs: months of history the tracker must not touch."""
    started, now = time.perf_counter(), datetime.now(UTC)
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY jobs_job ({', '.join(_COPY_COLUMNS)}) FROM STDIN") as copy:
        for i in range(count):
            copy.write_row(_history_row(i, owner.pk, team.pk, now))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    return time.perf_counter() - started


def _sbatch(_: int) -> int:
    # In a root, chroot starts in its "/"; on the host, alice's home.
    out = subprocess.run([*slurm_command(CLI_ROOT, "alice"), "sbatch", "--parsable", "--hold", "-A", ACCOUNT,
                          "-J", TAG, "-t", "5", "-o", "/dev/null", "--begin=now+2hours", "--wrap", "true"],
                         capture_output=True, text=True, check=True,
                         cwd="/" if CLI_ROOT else pwd.getpwnam("alice").pw_dir)
    return int(out.stdout.strip().split(";")[0])


def submit_held(count: int) -> tuple[list[int], float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(_sbatch, range(count)))
    return ids, time.perf_counter() - started


# ---------------------------------------------------------------- Slurm-side observation

def sdiag() -> dict[str, int]:
    """slurmctld's RPC counters, by message type and (prefixed user:) by user."""
    text = subprocess.run([*slurm_command(CLI_ROOT), "sdiag"], capture_output=True, text=True, check=True).stdout
    types_part, _, users_part = text.partition("Remote Procedure Call statistics by user")
    counts = {m[0]: int(m[1]) for m in re.findall(r"^\s+(\w+)\s+\(\s*\d+\)\s+count:(\d+)", types_part, re.M)}
    counts |= {f"user:{m[0]}": int(m[1]) for m in re.findall(r"^\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)",
                                                             users_part.split("Pending RPC")[0], re.M)}
    return counts


def rpc_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # sdiag's own request shows up as one REQUEST_STATS_INFO by root; leave it out.
    delta["REQUEST_STATS_INFO"] = delta.get("REQUEST_STATS_INFO", 0) - 1
    delta["user:root"] = delta.get("user:root", 0) - 1
    return {k: v for k, v in sorted(delta.items()) if v > 0}


def count_in_queue(state: str, reason: str | None = None) -> int:
    out = subprocess.run([*slurm_command(CLI_ROOT), "squeue", "-h", "-n", TAG, "-t", state, "-o", "%r"],
                         capture_output=True, text=True, check=True).stdout.split()
    return sum(1 for r in out if reason is None or r == reason)


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------- measuring

def timed_cycle(case: str, note: str = "") -> tuple[Measure, object]:
    before, children = sdiag(), os.times()
    cpu, wall = time.process_time(), time.perf_counter()
    result = tracking.track_jobs()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after_children = os.times()
    rpcs = rpc_delta(before, sdiag())
    child = (after_children.children_user + after_children.children_system
             - children.children_user - children.children_system)
    return Measure(case, "+".join(result.queries) or "-", wall * 1000, cpu * 1000, child * 1000, rpcs,
                   note or _counts(result)), result


def _counts(result) -> str:
    parts = {"seen": result.seen, "changed": result.changed, "adopted": result.adopted,
             "finished": result.finished, "accounted": result.accounted}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


def naive_squeue_json() -> Measure:
    before = sdiag()
    children, cpu, wall = os.times(), time.process_time(), time.perf_counter()
    proc = subprocess.run([*slurm_command(CLI_ROOT), "squeue", "--json"], capture_output=True, check=False)
    if proc.returncode:   # a root may lack the data_parser plugin squeue --json needs
        nan = float("nan")
        return Measure("naive: squeue --json, parsed", "squeue --json", nan, nan, nan, {},
                       f"failed: {proc.stderr.decode(errors='replace').strip()[:100]}")
    out = proc.stdout
    jobs = json.loads(out)["jobs"]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = os.times()
    rpcs = rpc_delta(before, sdiag())
    child = after.children_user + after.children_system - children.children_user - children.children_system
    return Measure("naive: squeue --json, parsed", "squeue --json", wall * 1000, cpu * 1000, child * 1000, rpcs,
                   f"{len(jobs)} jobs, {len(out) / 1e6:.1f} MB")


def naive_rest() -> Measure:
    before, cpu, wall = sdiag(), time.process_time(), time.perf_counter()
    body = gateway.as_operator("GET", "/jobs")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Measure("naive: slurmrestd /jobs, parsed", "GET /jobs", wall * 1000, cpu * 1000, 0,
                   rpc_delta(before, sdiag()), f"{len(body['jobs'])} jobs")


def quiet_cycle(*, shipped: bool) -> Measure | None:
    """A cycle a second after the last, once Slurm's queue has stopped changing.

    With the shipped settings the tracker probes slurmrestd only while the queue is small
    (PROBE_MAX_JOBS) and has been quiet for BUSY_WINDOW_S; this bench's queue holds more than
    PROBE_MAX_JOBS jobs, so there a quiet cycle is a sweep that finds nothing to write. The
    second measure lifts both limits (not shipped; named in its row) to show what the 304 probe
    alone costs with this queue. Cycles run a second apart, as beat runs them, until one finds
    nothing to write (others share the cluster).
    """
    saved = tracking.BUSY_WINDOW_S, tracking.PROBE_MAX_JOBS
    if shipped:
        label = f"quiet, shipped (BUSY_WINDOW_S={saved[0]}, PROBE_MAX_JOBS={saved[1]})"
        time.sleep(saved[0])   # the busy window after the last change must pass first
    else:
        tracking.BUSY_WINDOW_S, tracking.PROBE_MAX_JOBS = 0, 10 ** 9
        label = "quiet, NOT shipped: BUSY_WINDOW_S=0, PROBE_MAX_JOBS=1e9"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(1)
            measure, result = timed_cycle(label)
            if result.queries == ["probe"] or (shipped and not result.changed and not result.adopted):
                return measure
        return None
    finally:
        tracking.BUSY_WINDOW_S, tracking.PROBE_MAX_JOBS = saved


# ---------------------------------------------------------------- scenario

def scenario(ids: list[int]) -> list[Measure]:
    gateway.ping()  # a running worker's HTTP client is warm; build this process's before timing
    tracking.reset_tracker()
    rows = [timed_cycle("adopt the 1,000 sbatch jobs")[0], timed_cycle("repeat at once (nothing to write)")[0]]
    subprocess.run([*slurm_command(CLI_ROOT), "scontrol", "release", ",".join(map(str, ids))], check=True,
                   capture_output=True)
    wait_for(lambda: count_in_queue("PD", "JobHeldUser") == 0, "Slurm to release every job")
    rows.append(timed_cycle("1,000 released (reason changes)")[0])
    rows += [m for m in (quiet_cycle(shipped=True), quiet_cycle(shipped=False)) if m]
    subprocess.run([*slurm_command(CLI_ROOT), "scancel", ",".join(map(str, ids))], check=True, capture_output=True)
    wait_for(lambda: count_in_queue("PD") == 0, "Slurm to cancel every job")
    rows.append(timed_cycle("1,000 cancelled (state changes)")[0])
    rows.append(accounting_cycle())
    rows += [naive_squeue_json(), naive_rest()]
    return rows


def accounting_cycle() -> Measure:
    """The cycle that asks sacct for the 1,000 ended jobs (sacct lags, so maybe not the first)."""
    for _ in range(20):
        time.sleep(1)
        measure, result = timed_cycle("sacct completes the 1,000 ended")
        if result.accounted:
            return measure
    raise SystemExit("sacct never recorded the cancelled jobs")


# ---------------------------------------------------------------- report

def report(rows: list[Measure], known: int, queued: int) -> None:
    print(f"\nTracking cycle on {SUITE} ({SLURM_VERSION}, REST {gateway.rest_api().version}): {known:,} jobs in "
          f"PostgreSQL, {CHANGED:,} changed in Slurm, {queued:,} jobs in slurmctld's queue")
    print(f"Machine: {machine()}\n")
    print(f"{'case':36} {'Slurm calls':14} {'wall ms':>8} {'CPU ms':>7} {'child ms':>8}  slurmctld RPCs / result")
    for r in rows:
        rpcs = ", ".join(f"{k} {v}" for k, v in r.rpcs.items()) or "none"
        print(f"{r.case:36} {r.queries:14} {r.wall_ms:8.1f} {r.cpu_ms:7.1f} {r.child_cpu_ms:8.1f}  {rpcs}")
        if r.note:
            print(f"{'':36} {'':14} {'':8} {'':7} {'':8}  {r.note}")
    busy = next(r for r in rows if r.case.startswith("1,000 cancelled"))
    naive = next(r for r in rows if r.case.startswith("naive: squeue"))
    cpu_ratio = (naive.cpu_ms + naive.child_cpu_ms) / (busy.cpu_ms + busy.child_cpu_ms)
    print(f"\nnaive squeue --json vs the cycle that recorded 1,000 cancels: {naive.wall_ms / busy.wall_ms:.1f}x "
          f"the wall time, {cpu_ratio:.1f}x the CPU (portal + child processes)")


def main() -> None:
    owner, team = reset_rows()
    took = insert_history(owner, team, KNOWN - CHANGED)
    print(f"inserted {KNOWN - CHANGED:,} finished jobs in {took:.1f} s")
    ids, took = submit_held(CHANGED)
    print(f"submitted {len(ids):,} held jobs as alice with sbatch in {took:.1f} s ({len(ids) / took:.0f}/s)")
    try:
        rows = scenario(ids)
        report(rows, Job.objects.count(), len(gateway.sweep_jobs().jobs))
    finally:
        subprocess.run([*slurm_command(CLI_ROOT), "scancel", "-n", TAG], check=False, capture_output=True)
        remove_account()
        stop_cluster(SUITE)


if __name__ == "__main__":
    main()
