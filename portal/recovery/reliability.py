"""Goodput and ETTR, per team and cluster-wide, over a window of recent days.

Definitions (README "Goodput and ETTR"; the window is PORTAL_RELIABILITY_WINDOW_DAYS, 7 by default):

* A run's allocated GPU-seconds: its GPUs x (ended_at - started_at). Its lost GPU-seconds: the
  work since its last complete checkpoint (Attempt.lost_gpu_s, recorded when the run failed;
  used whenever present). Without a figure, a run requeued or held lost everything it did, and
  a run that ended for its own reasons (finished, failed by its script) lost nothing to the
  infrastructure.
* **Goodput** = (allocated - lost) / allocated, summed over the runs that ENDED in the window.
  Runs still going are left out: what they will lose is not known yet.
* **ETTR** (effective training time ratio) = productive runtime / wall-clock, summed over the
  jobs that ENDED in the window (state COMPLETED, FAILED, ...; they must have started), where
  wall-clock = end_time - submit_time, so the time spent waiting again after each requeue
  counts against it, and productive runtime = the runs' time minus each run's lost time
  (lost GPU-seconds / its GPUs). A job with no recorded runs counts its one run,
  end_time - start_time, as productive.
  Summed, not averaged per job: a week-long job weighs more than a one-minute one.

Each figure is one aggregate query (GROUP BY team) over indexed windows, never a Python loop
over rows. The beat task refresh-reliability computes them ahead into the cache that /metrics
and the page read (PORTAL_RELIABILITY_CACHE_SECONDS); with 1M jobs a computation takes ~1.5 s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from portal.jobs.models import Job
from portal.jobs.states import ENDED
from portal.recovery.models import Attempt, Recovery
from portal.teams.models import Team

CLUSTER = ""  # the team key of the cluster-wide figures
CACHE_KEY = "recovery:reliability:v1"

_ATTEMPT = Attempt._meta.db_table
_JOB = Job._meta.db_table
_RECOVERY = Recovery._meta.db_table
_LOST_OUTCOMES = [Attempt.Outcome.REQUEUED.value, Attempt.Outcome.HELD.value]

# Per run: allocated GPU-seconds and lost GPU-seconds (never more than allocated).
_RUN_S = "GREATEST(0, EXTRACT(EPOCH FROM (a.ended_at - a.started_at)))"
_LOST_GPU_S = (f"LEAST(a.gpus * {_RUN_S}, COALESCE(a.lost_gpu_s, "
               f"CASE WHEN a.outcome = ANY(%s) THEN a.gpus * {_RUN_S} ELSE 0 END))")

# GROUPING SETS: each team's row and the cluster's (team_id NULL) in one scan.
GOODPUT_SQL = f"""
SELECT j.team_id, GROUPING(j.team_id) AS whole, SUM(a.gpus * {_RUN_S}), SUM({_LOST_GPU_S}), COUNT(*)
FROM {_ATTEMPT} a JOIN {_JOB} j ON j.id = a.job_id
WHERE a.ended_at >= %s AND a.ended_at < %s AND a.started_at IS NOT NULL
GROUP BY GROUPING SETS ((j.team_id), ())
"""  # noqa: S608 - table names come from the models; every value is a parameter

# Lost time per run is lost GPU-seconds / GPUs (a run without GPUs loses its whole lost share).
ETTR_SQL = f"""
WITH ended AS (
  SELECT id, team_id, submit_time, start_time, end_time FROM {_JOB}
  WHERE end_time >= %s AND end_time < %s AND state = ANY(%s)
    AND submit_time IS NOT NULL AND start_time IS NOT NULL AND end_time >= submit_time
), runs AS (
  SELECT a.job_id, SUM({_RUN_S}) AS run_s, SUM({_LOST_GPU_S} / GREATEST(a.gpus, 1)) AS lost_s
  FROM {_ATTEMPT} a JOIN ended e ON e.id = a.job_id
  WHERE a.started_at IS NOT NULL AND a.ended_at IS NOT NULL GROUP BY a.job_id
)
SELECT e.team_id, GROUPING(e.team_id) AS whole,
  SUM(GREATEST(0, COALESCE(r.run_s, EXTRACT(EPOCH FROM (e.end_time - e.start_time))) - COALESCE(r.lost_s, 0))),
  SUM(EXTRACT(EPOCH FROM (e.end_time - e.submit_time))), COUNT(*)
FROM ended e LEFT JOIN runs r ON r.job_id = e.id
GROUP BY GROUPING SETS ((e.team_id), ())
"""  # noqa: S608

# Counters since the beginning (Prometheus takes the rates): automatic requeues by cause, and
# GPU-seconds lost by team.
REQUEUES_SQL = f"SELECT cause, COUNT(*) FROM {_RECOVERY} WHERE done_at IS NOT NULL GROUP BY cause"  # noqa: S608
LOST_TOTAL_SQL = f"""
SELECT j.team_id, SUM({_LOST_GPU_S}) FROM {_ATTEMPT} a JOIN {_JOB} j ON j.id = a.job_id
WHERE a.ended_at IS NOT NULL AND a.started_at IS NOT NULL GROUP BY j.team_id
"""  # noqa: S608


# Per day (in the portal's time zone) for the trend charts: the same sums, grouped by day too.
GOODPUT_DAILY_SQL = f"""
SELECT (a.ended_at AT TIME ZONE %s)::date AS day, j.team_id, GROUPING(j.team_id) AS whole,
  SUM(a.gpus * {_RUN_S}), SUM({_LOST_GPU_S})
FROM {_ATTEMPT} a JOIN {_JOB} j ON j.id = a.job_id
WHERE a.ended_at >= %s AND a.ended_at < %s AND a.started_at IS NOT NULL
GROUP BY GROUPING SETS ((day, j.team_id), (day))
"""  # noqa: S608
ETTR_DAILY_SQL = ETTR_SQL.replace("SELECT e.team_id, GROUPING(e.team_id) AS whole,",
                                  "SELECT (e.end_time AT TIME ZONE %s)::date AS day, e.team_id, "
                                  "GROUPING(e.team_id) AS whole,").replace(
    "GROUP BY GROUPING SETS ((e.team_id), ())", "GROUP BY GROUPING SETS ((day, e.team_id), (day))")


@dataclass(frozen=True)
class Figures:
    """One team's (or the cluster's) figures in the window."""

    allocated_gpu_s: float = 0.0
    lost_gpu_s: float = 0.0
    runs: int = 0
    productive_s: float = 0.0
    wall_s: float = 0.0
    jobs: int = 0

    @property
    def goodput(self) -> float | None:
        return (self.allocated_gpu_s - self.lost_gpu_s) / self.allocated_gpu_s if self.allocated_gpu_s else None

    @property
    def ettr(self) -> float | None:
        return min(1.0, self.productive_s / self.wall_s) if self.wall_s else None

    @property
    def allocated_gpu_h(self) -> float:
        return self.allocated_gpu_s / 3600

    @property
    def lost_gpu_h(self) -> float:
        return self.lost_gpu_s / 3600


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    by_team: dict[str, Figures]  # team name -> figures; CLUSTER ("") -> the whole cluster


def _rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _team_key(team_id: int | None, whole: int, names: dict[int, str]) -> str:
    return CLUSTER if whole else names.get(team_id, f"team-{team_id}")


def compute(*, days: int | None = None, now: datetime | None = None) -> Report:
    """Goodput and ETTR for every team with runs or ended jobs in the window, and the cluster's."""
    until = now or timezone.now()
    since = until - timedelta(days=days or settings.PORTAL_RELIABILITY_WINDOW_DAYS)
    names = dict(Team.objects.values_list("id", "name"))
    merged: dict[str, dict] = {}
    for team_id, whole, allocated, lost, runs in _rows(GOODPUT_SQL, [_LOST_OUTCOMES, since, until]):
        merged.setdefault(_team_key(team_id, whole, names), {}).update(
            allocated_gpu_s=float(allocated or 0), lost_gpu_s=float(lost or 0), runs=runs)
    for team_id, whole, productive, wall, jobs in _rows(ETTR_SQL, [since, until, sorted(ENDED), _LOST_OUTCOMES]):
        merged.setdefault(_team_key(team_id, whole, names), {}).update(
            productive_s=float(productive or 0), wall_s=float(wall or 0), jobs=jobs)
    merged.setdefault(CLUSTER, {})
    return Report(since=since, until=until, by_team={key: Figures(**values) for key, values in merged.items()})


def counters() -> tuple[dict[str, int], dict[str, float]]:
    """(automatic requeues by cause, lost GPU-seconds by team name), since the beginning."""
    names = dict(Team.objects.values_list("id", "name"))
    requeues = dict(_rows(REQUEUES_SQL, []))
    lost = {names.get(team_id, f"team-{team_id}"): float(total or 0)
            for team_id, total in _rows(LOST_TOTAL_SQL, [_LOST_OUTCOMES])}
    return requeues, lost


@dataclass(frozen=True)
class Trend:
    """Goodput and ETTR per day (None on a day with nothing ended), by team name and CLUSTER."""

    days: list[date]
    goodput: dict[str, list[float | None]]
    ettr: dict[str, list[float | None]]


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def daily(*, days: int, now: datetime | None = None) -> Trend:
    """The window's figures day by day: two aggregate queries, like compute()."""
    until = now or timezone.now()
    since = until - timedelta(days=days)
    zone = settings.TIME_ZONE
    names = dict(Team.objects.values_list("id", "name"))
    first = timezone.localtime(since).date()
    axis = [first + timedelta(days=n) for n in range((timezone.localtime(until).date() - first).days + 1)]
    index = {day: n for n, day in enumerate(axis)}
    goodput: dict[str, list] = {}
    ettr: dict[str, list] = {}
    for day, team_id, whole, allocated, lost in _rows(GOODPUT_DAILY_SQL, [zone, _LOST_OUTCOMES, since, until]):
        row = goodput.setdefault(_team_key(team_id, whole, names), [None] * len(axis))
        row[index[day]] = _ratio(float(allocated or 0) - float(lost or 0), float(allocated or 0))
    params = [since, until, sorted(ENDED), _LOST_OUTCOMES, zone]
    for day, team_id, whole, productive, wall, _ in _rows(ETTR_DAILY_SQL, params):
        row = ettr.setdefault(_team_key(team_id, whole, names), [None] * len(axis))
        value = _ratio(float(productive or 0), float(wall or 0))
        row[index[day]] = None if value is None else min(1.0, value)
    return Trend(days=axis, goodput=goodput, ettr=ettr)


def cached_daily(days: int) -> Trend:
    return _cached(f"{CACHE_KEY}:daily:{days}", lambda: daily(days=days))


def _cached(key: str, make):
    """`make()` through the cache, kept PORTAL_RELIABILITY_CACHE_SECONDS (0: always computed)."""
    ttl = settings.PORTAL_RELIABILITY_CACHE_S
    value = cache.get(key) if ttl else None
    if value is None:
        value = make()
        if ttl:
            cache.set(key, value, ttl)
    return value


def cached_report(days: int) -> Report:
    """The reliability page's figures: recomputed at most once per cache period and window."""
    return _cached(f"{CACHE_KEY}:report:{days}", lambda: compute(days=days))


def metrics_data() -> dict:
    """What /metrics shows, as plain data."""
    report = compute()
    requeues, lost = counters()
    return {"window_days": settings.PORTAL_RELIABILITY_WINDOW_DAYS,
            "teams": {team: {**asdict(f), "goodput": f.goodput, "ettr": f.ettr} for team, f in report.by_team.items()},
            "requeues": requeues, "lost_gpu_s": lost}


def cached_for_metrics() -> dict:
    """/metrics reads this: the beat task (refresh) keeps it warm, so a scrape costs a cache read."""
    return _cached(CACHE_KEY, metrics_data)


def refresh() -> dict:
    """Recompute the /metrics figures and the default window's page figures into the cache."""
    ttl = settings.PORTAL_RELIABILITY_CACHE_S
    data = metrics_data()
    if ttl:
        cache.set(CACHE_KEY, data, ttl)
        days = settings.PORTAL_RELIABILITY_WINDOW_DAYS
        cache.set(f"{CACHE_KEY}:report:{days}", compute(days=days), ttl)
        cache.set(f"{CACHE_KEY}:daily:{days}", daily(days=days), ttl)
    return {"teams": len(data["teams"]) - 1}
