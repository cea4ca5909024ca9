"""GPU-hours per team: what budgets, the submit pre-check and the team pages read.

The contract other modules rely on: `period_bounds`, `team_usage` (and the `Usage` fields) and
`daily_series` (and the `DayUsage` fields). Keep them stable.

A team's GPU-hours in a period are three parts added up:

* finished work, from the rollup (portal/quotas/rollup.py: GPU-seconds per team, user, GPU type
  and local day; every run of a requeued job, sacct's elapsed for the last run);
* jobs that finished after the rollup's cursor (at most one beat interval plus its overlap
  ago), computed from their rows with the rollup's own SQL, so a job that just ended is not
  missing while it waits to be folded;
* jobs still queued or running: their earlier runs (requeued) and the current run so far.

So the figures trail Slurm only by the tracker (state every ~1 s, sacct's elapsed on a later
cycle) and never by the rollup: "never more than 60 s behind" holds even if beat stalls.
A period is whole local days (PORTAL_TIME_ZONE); a run over a day or period edge is split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from portal.jobs.models import Job
from portal.jobs.states import ENDED, SLURM_ACTIVE
from portal.quotas import rollup
from portal.recovery.models import Attempt
from portal.teams.models import Team, TeamPolicy, UsageDay, UsageFold

# States in which a job holds its GPUs (the tracker's names).
HOLDING = ("RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING")
ANY_TYPE = "any"   # by_type's key for jobs that asked for GPUs of no particular type


@dataclass(frozen=True)
class DayUsage:
    """One local day of a period: its GPU-hours and the period's total up to its end."""

    day: date
    gpu_hours: float
    cumulative: float


@dataclass
class Usage:
    """A team's GPU use in one budget period, `as_of` a moment (running jobs counted so far)."""

    team: str
    period: str
    start: datetime                        # local midnight, in PORTAL_TIME_ZONE
    end: datetime                          # exclusive
    as_of: datetime
    gpu_hours: float = 0.0                 # finished + running so far
    running_gpu_hours: float = 0.0         # the running jobs' current runs' part of gpu_hours
    running_gpus: int = 0                  # GPUs the team holds now
    by_type: dict[str, float] = field(default_factory=dict)
    by_user: dict[str, float] = field(default_factory=dict)
    budget: float | None = None
    over_budget: str = ""                  # "", "hard" or "soft": the budget is used up
    # Every day from the period's start to as_of's day, zero days included (a chart's x axis).
    by_day: list[DayUsage] = field(default_factory=list)

    @property
    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.gpu_hours


def site_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the month or week (from Monday) holding `now`, in the site's time zone
    (PORTAL_TIME_ZONE): a budget resets at local midnight, where its users expect it."""
    local = now.astimezone(site_zone())
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == TeamPolicy.Period.WEEK:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    # Re-attach the zone so a daylight-saving change inside the period is handled.
    zone = site_zone()
    return start.replace(tzinfo=zone), end.replace(tzinfo=zone)


class _Tally:
    """GPU-seconds gathered per day, user and type, within the period's days up to as_of."""

    def __init__(self, first: date, last: date) -> None:
        self.first, self.last = first, last
        self.days: dict[date, float] = {}
        self.users: dict[str, float] = {}
        self.types: dict[str, float] = {}

    def add(self, day: date, user: str, gpu_type: str, seconds: float) -> float:
        if not self.first <= day <= self.last or seconds <= 0:
            return 0.0
        self.days[day] = self.days.get(day, 0.0) + seconds
        self.users[user] = self.users.get(user, 0.0) + seconds
        key = gpu_type or ANY_TYPE
        self.types[key] = self.types.get(key, 0.0) + seconds
        return seconds

    def add_run(self, user: str, gpu_type: str, gpus: int, begin: datetime, finish: datetime) -> float:
        return sum(self.add(day, user, gpu_type, gpus * seconds) for day, seconds in split_days(begin, finish))


def split_days(begin: datetime, finish: datetime) -> Iterator[tuple[date, float]]:
    """[begin, finish) cut at local midnights: (local day, seconds in it)."""
    zone = site_zone()
    day = begin.astimezone(zone).date()
    while begin < finish:
        midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
        stop = min(finish, midnight)
        yield day, (stop - begin).total_seconds()
        begin, day = stop, day + timedelta(days=1)


def team_usage(team: Team, *, now: datetime | None = None, period: str | None = None) -> Usage:
    """The team's GPU-hours in the budget period holding `now` (default: the team's policy's
    period, else month), counted up to `now`. Finished work is counted by whole local days, so
    for a `now` in the past a job that ended later that same day is included."""
    return teams_usage([team], now=now, period=period)[team.pk]


def teams_usage(teams: list[Team], *, now: datetime | None = None, period: str | None = None) -> dict[int, Usage]:
    """team_usage for several teams at once, each in its own period, in a fixed number of queries
    (the admin list shows every team)."""
    now = now or timezone.now()
    policies = {p.team_id: p for p in TeamPolicy.objects.filter(team__in=teams)}
    found = {team.pk: _begin(team, policies.get(team.pk), now, period) for team in teams}
    if not found:
        return {}
    earliest = min(usage.start for usage, _ in found.values())
    _add_rolled_up(found)
    _add_unfolded(found, earliest)
    running_s = _add_active(found, earliest, now)
    for pk, (usage, tally) in found.items():
        _finish(usage, tally, running_s.get(pk, 0.0))
        policy = policies.get(pk)
        if policy and policy.gpu_hours_budget is not None and usage.gpu_hours >= policy.gpu_hours_budget:
            usage.over_budget = policy.over_budget
    return {pk: usage for pk, (usage, _) in found.items()}


def _begin(team: Team, policy: TeamPolicy | None, now: datetime, period: str | None) -> tuple[Usage, _Tally]:
    period = period or (policy.budget_period if policy else TeamPolicy.Period.MONTH)
    start, end = period_bounds(period, now)
    usage = Usage(team=team.name, period=period, start=start, end=end, as_of=now,
                  budget=policy.gpu_hours_budget if policy else None)
    last = min(now.astimezone(site_zone()).date(), (end - timedelta(days=1)).date())
    return usage, _Tally(start.date(), last)


def daily_series(team: Team, *, now: datetime | None = None, period: str | None = None) -> list[DayUsage]:
    """The burn-down chart's series: each local day of the period up to `now`'s day, its
    GPU-hours and the running total (running jobs so far included). The same figures as
    `team_usage(...).by_day`; call that instead when you need both (one set of queries)."""
    return team_usage(team, now=now, period=period).by_day


Found = dict[int, tuple[Usage, _Tally]]   # team pk -> (its usage, its tally)


def _add_rolled_up(found: Found) -> None:
    first = min(tally.first for _, tally in found.values())
    last = max(tally.last for _, tally in found.values())
    rows = (UsageDay.objects.filter(team_id__in=found, day__gte=first, day__lte=last)
            .values_list("team_id", "day", "user__username", "gpu_type", "gpu_seconds"))
    for team_id, day, user, gpu_type, seconds in rows:
        found[team_id][1].add(day, user, gpu_type, seconds)   # each tally keeps its own days


def _add_unfolded(found: Found, start: datetime) -> None:
    """Finished jobs the rollup has not folded yet (changed after its cursor, no fold rows)."""
    jobs = Job.objects.filter(team_id__in=found, state__in=ENDED, end_time__gte=start)
    cursor = rollup.cursor_time()
    if cursor:
        jobs = jobs.filter(updated_at__gte=cursor)
    folded = UsageFold.objects.filter(job_id__in=jobs.values("id")).values("job_id")
    ids = list(jobs.exclude(id__in=folded).values_list("id", flat=True))
    if not ids:
        return
    with connection.cursor() as cursor_:
        cursor_.execute(rollup.RUNS_BY_DAY_SQL, rollup.fold_params(ids))
        rows = cursor_.fetchall()
    names = dict(get_user_model().objects.filter(id__in={r[3] for r in rows}).values_list("id", "username"))
    for _job, day, team_id, owner, gpu_type, seconds in rows:
        found[team_id][1].add(day, names[owner], gpu_type, seconds)


def _add_active(found: Found, start: datetime, now: datetime) -> dict[int, float]:
    """Queued and running jobs: their earlier runs and the current run up to `now`. Returns
    each team's current runs' GPU-seconds in its period."""
    # Only jobs on GPUs now or run before (requeued): a long queue of fresh jobs costs nothing.
    active = (Job.objects.filter(team_id__in=found, state__in=SLURM_ACTIVE)
              .filter(Q(state__in=HOLDING) | Q(restart_count__gt=0)))
    jobs = {job["id"]: job for job in active.values(
        "id", "team_id", "owner__username", "gpu_type", "nodes", "gpus_per_node", "state", "start_time",
        "restart_count")}
    running_s: dict[int, float] = {}
    if not jobs:
        return running_s
    runs: dict[int, dict[int, dict]] = {}
    for attempt in Attempt.objects.filter(job_id__in=jobs).values("job_id", "number", "started_at", "ended_at", "gpus"):
        runs.setdefault(attempt["job_id"], {})[attempt["number"]] = attempt
    for pk, job in jobs.items():
        usage, tally = found[job["team_id"]]
        mine = runs.get(pk, {})
        for number, run in mine.items():
            if number < job["restart_count"] and run["started_at"] and run["ended_at"]:
                tally.add_run(job["owner__username"], job["gpu_type"], run["gpus"],
                              max(run["started_at"], usage.start), min(run["ended_at"], now))
        running_s[job["team_id"]] = running_s.get(job["team_id"], 0.0) + _add_current_run(
            tally, usage, job, mine.get(job["restart_count"]), start=usage.start, now=now)
    return running_s


def _add_current_run(tally: _Tally, usage: Usage, job: dict, attempt: dict | None, *, start: datetime,
                     now: datetime) -> float:
    if job["state"] not in HOLDING or job["start_time"] is None or job["start_time"] > now:
        return 0.0
    # The attempt holds Slurm's allocated GPUs when the recovery cycle has seen the run start.
    gpus = (attempt or {}).get("gpus") or job["nodes"] * job["gpus_per_node"]
    if not gpus:
        return 0.0
    usage.running_gpus += gpus
    return tally.add_run(job["owner__username"], job["gpu_type"], gpus, max(job["start_time"], start), now)


def _finish(usage: Usage, tally: _Tally, running_s: float) -> None:
    usage.gpu_hours = sum(tally.days.values()) / 3600
    usage.running_gpu_hours = running_s / 3600
    usage.by_user = {user: s / 3600 for user, s in sorted(tally.users.items(), key=lambda kv: -kv[1])}
    usage.by_type = {kind: s / 3600 for kind, s in sorted(tally.types.items())}
    total, day = 0.0, tally.first
    while day <= tally.last:
        hours = tally.days.get(day, 0.0) / 3600
        total += hours
        usage.by_day.append(DayUsage(day=day, gpu_hours=hours, cumulative=total))
        day += timedelta(days=1)
