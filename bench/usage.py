"""Team usage query with 1,000,000 finished jobs in PostgreSQL, while others write.

Target (issue 10): the usage query for a team page <= 50 ms. The page's query is one
`team_usage(team)` call: totals, by type, by user and the per-day series (`by_day`; `daily_series`
is the same call). Database `portal_bench_usage` (its own), seeded by bench/seed_jobs.py and
then made into finished jobs: 10 min to 4 h each, 1-4 GPUs, one in a hundred requeued once
(an Attempt row for its first run), spread over the last ~230 days; 20 jobs running.

Runs, for the team vision (alice, the heavy user with 5% of all jobs, and bob) and team05:

1. rebuild the rollup from all 1M jobs (`manage.py rebuild_usage`'s function), timed once;
2. quiet: team_usage warm (same connection), cold (a new connection per call, opened outside
   the timer: no prepared plans; PostgreSQL's buffer cache is shared with other people's runs
   and not dropped), and the baseline: the first version's sum over Job rows for the same
   period. Each for this month so far and for the whole of last month (every day filled);
3. the same while a writer process inserts finished jobs (40 a second, every team) and runs
   the rollup cycle every 2 s, as beat would; the writer's cycle times are printed too.

    .venv/bin/python bench/usage.py [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

import django

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import PY, ROOT, ensure_database, machine, summary_ms

DB = "portal_bench_usage"
# Always the bench's own database (helper environments set PORTAL_DB_NAME to a working one).
os.environ.update(PORTAL_DB_NAME=DB, DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_DB_STATEMENT_TIMEOUT="0")
django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Q  # noqa: E402
from django.utils import timezone  # noqa: E402

from portal.jobs.models import Job  # noqa: E402
from portal.quotas import rollup  # noqa: E402
from portal.quotas.usage import period_bounds, team_usage  # noqa: E402
from portal.teams.models import Membership, Team  # noqa: E402

TEAMS = ("vision", "team05")
RUNNING = 20

FINISH_SQL = """
UPDATE jobs_job SET
  state = CASE WHEN state IN ('RUNNING', 'PENDING') THEN 'COMPLETED' ELSE state END,
  elapsed_s = 600 + (id * 7919) % 13800,
  start_time = start_time - interval '4 hours',
  end_time = start_time - interval '4 hours' + make_interval(secs => 600 + (id * 7919) % 13800),
  restart_count = CASE WHEN id % 100 = 0 THEN 1 ELSE 0 END,
  accounted = true
WHERE end_time IS NULL
"""
ATTEMPTS_SQL = """
INSERT INTO recovery_attempt (job_id, number, started_at, ended_at, nodes_list, gpus, resumed_from,
  last_checkpoint, failure_class, cause, failed_node, detail, evidence, outcome)
SELECT id, 0, start_time - interval '2 hours', start_time - interval '1 hour', nodes_list, gpus_per_node,
  '', '', 'infrastructure', 'node_fail', '', '', '{}', 'requeued'
FROM jobs_job j WHERE restart_count = 1
  AND NOT EXISTS (SELECT 1 FROM recovery_attempt a WHERE a.job_id = j.id)
"""


def prepare() -> None:
    with connection.cursor() as cur:
        cur.execute(FINISH_SQL)
        if cur.rowcount:
            print(f"made {cur.rowcount:,} seeded jobs finished")
            cur.execute(ATTEMPTS_SQL)
            cur.execute("ANALYZE jobs_job; ANALYZE recovery_attempt")
    vision = Job.objects.filter(team__name="vision").order_by("-id").first()
    Job.objects.filter(name__startswith="bench-usage-").delete()
    Job.objects.bulk_create([Job(owner_id=vision.owner_id, team_id=vision.team_id, name=f"bench-usage-run{i}",
                                 state="RUNNING", start_time=vision.end_time, nodes=1, gpus_per_node=2,
                                 gpu_type="h100") for i in range(RUNNING)])
    started = time.perf_counter()
    folded = rollup.rebuild()
    print(f"rollup rebuilt from {folded:,} finished jobs in {time.perf_counter() - started:.1f} s")
    with connection.cursor() as cur:
        cur.execute("ANALYZE teams_usageday; ANALYZE teams_usagefold")
        cur.execute("SELECT count(*) FROM teams_usageday")
        print(f"teams_usageday: {cur.fetchone()[0]:,} rows; jobs_job: {Job.objects.count():,} rows")


def naive_usage(team, now):
    """The first version of team_usage: every job row of the period, summed in Python."""
    start, end = period_bounds("month", now)
    jobs = (Job.objects.filter(team=team, start_time__lt=min(end, now), gpus_per_node__gt=0)
            .filter(Q(end_time__isnull=True) | Q(end_time__gt=start))
            .values_list("owner__username", "gpu_type", "nodes", "gpus_per_node", "start_time", "end_time", "state"))
    total = 0.0
    for _user, _type, nodes, per_node, started, ended, state in jobs:
        if ended is None and state != "RUNNING":
            continue
        total += max(0.0, (min(ended or now, end) - max(started, start)).total_seconds()) * nodes * per_node / 3600
    return total


def moments() -> dict[str, datetime | None]:
    """This month so far, and the whole of last month (its last second: every day filled)."""
    first = period_bounds("month", timezone.now())[0]
    return {"this month": None, "last month, whole": first - timedelta(seconds=1)}


def timed(call, *args, **kwargs) -> float:
    started = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - started


def measure(calls: int, label: str) -> None:
    for name in TEAMS:
        for period, now in moments().items():
            measure_one(Team.objects.get(name=name), period, now, calls, label)


def measure_one(team: Team, period: str, now: datetime | None, calls: int, label: str) -> None:
    warm, cold, connect, base = [], [], [], []
    for i in range(calls):
        warm.append(timed(team_usage, team, now=now))
        if i % 4 == 0:
            # Cold: a new connection (no prepared plans, no warmed session); the connection itself
            # timed apart: the portal keeps its connections (CONN_MAX_AGE 60 s).
            connection.close()
            connect.append(timed(connection.ensure_connection))
            cold.append(timed(team_usage, team, now=now))
        if i % 10 == 0:
            base.append(timed(naive_usage, team, now or timezone.now()))
    usage = team_usage(team, now=now)
    print(f"[{label}] {team.name}, {period}: {usage.gpu_hours:,.0f} GPU-h ({len(usage.by_day)} days, "
          f"{len(usage.by_user)} users, {usage.running_gpus} GPUs running); "
          f"baseline's sum {naive_usage(team, now or timezone.now()):,.0f} GPU-h")
    print(f"  team_usage warm  {summary_ms(warm)}")
    print(f"  team_usage cold  {summary_ms(cold)}   (new connection first: {summary_ms(connect)})")
    print(f"  baseline: sum over job rows  {summary_ms(base)}")


def writer(seconds: float) -> None:
    """Insert finished jobs and fold them as beat would; print the fold cycles' times."""

    members = list(Membership.objects.values_list("user_id", "team_id"))
    deadline, next_fold, cycles, made = time.monotonic() + seconds, time.monotonic() + 2, [], 0
    while time.monotonic() < deadline:
        now = timezone.now()
        rows = [members[(made + k) * 7 % len(members)] for k in range(4)]
        Job.objects.bulk_create([Job(owner_id=u, team_id=t, name="bench-usage-new", state="COMPLETED",
                                     start_time=now - timedelta(hours=1), end_time=now, elapsed_s=3600,
                                     nodes=1, gpus_per_node=2, gpu_type="h100", accounted=True) for u, t in rows])
        made += len(rows)
        if time.monotonic() >= next_fold:
            started = time.perf_counter()
            rollup.fold_changed_jobs()
            cycles.append(time.perf_counter() - started)
            next_fold += 2
        time.sleep(0.1)
    print(f"[writer] inserted {made:,} finished jobs; rollup cycle {summary_ms(cycles)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--writer", type=float, help=argparse.SUPPRESS)   # internal: the writer process
    args = parser.parse_args()
    if args.writer:
        writer(args.writer)
        return
    print(machine())
    env = ensure_database(DB)
    subprocess.run([PY, "bench/seed_jobs.py", "1000000"], cwd=ROOT, env={**env, "PORTAL_DB_STATEMENT_TIMEOUT": "0"},
                   check=True)
    prepare()
    measure(args.calls, "quiet")
    proc = subprocess.Popen([PY, "bench/usage.py", "--writer", "90"], cwd=ROOT, env=env)
    time.sleep(3)
    measure(args.calls, "writer running")
    proc.wait()


if __name__ == "__main__":
    main()
