"""Every team at once (the admin list) gives each team's own team_usage, each in its own period,
and the burn-down chart's day points climb to the same total, day by local day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from portal.jobs.models import Job
from portal.quotas.charts import day_points
from portal.quotas.usage import team_usage, teams_usage
from portal.teams.models import Team, TeamPolicy

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)


def row(owner, team, start: datetime, end: datetime | None, *, state: str = "COMPLETED", gpus: int = 2,
        nodes: int = 1, gpu_type: str = "h100") -> Job:
    return Job.objects.create(owner=owner, team=team, name="j", state=state, start_time=start, end_time=end,
                              submit_time=start, nodes=nodes, gpus_per_node=gpus, gpu_type=gpu_type)


@pytest.fixture
def teams(alice, bob):
    vision, nlp, idle = (Team.objects.create(name=n) for n in ("qt-vision", "qt-nlp", "qt-idle"))
    TeamPolicy.objects.create(team=nlp, budget_period="week", gpu_hours_budget=30, over_budget="soft")
    TeamPolicy.objects.create(team=vision, gpu_hours_budget=1000)
    for team in (vision, nlp):
        row(alice, team, NOW - timedelta(days=30), NOW - timedelta(days=20))        # before either period
        row(alice, team, datetime(2026, 10, 31, 22, tzinfo=UTC), datetime(2026, 11, 1, 2, tzinfo=UTC))  # across
        row(bob, team, NOW - timedelta(days=3, hours=5), NOW - timedelta(days=2), nodes=2, gpu_type="")
        row(bob, team, NOW - timedelta(hours=7), None, state="RUNNING", gpus=4)     # running so far
        row(alice, team, NOW - timedelta(hours=2), None, state="PENDING")           # stale: holds no GPUs
        row(alice, team, NOW - timedelta(days=1), NOW - timedelta(hours=20), gpus=0)  # CPU only
    return [vision, nlp, idle]


def test_the_bulk_usage_is_team_usage_for_every_team(teams):
    bulk = teams_usage(teams, now=NOW)
    for team in teams:
        one = team_usage(team, now=NOW)
        got = bulk[team.pk]
        assert (got.period, got.start, got.end, got.budget, got.over_budget) == \
               (one.period, one.start, one.end, one.budget, one.over_budget)
        assert got.gpu_hours == pytest.approx(one.gpu_hours)
        assert got.running_gpu_hours == pytest.approx(one.running_gpu_hours)
        assert got.running_gpus == one.running_gpus
        assert got.by_user == pytest.approx(one.by_user) and got.by_type == pytest.approx(one.by_type)
    assert bulk[teams[1].pk].over_budget == "soft"    # nlp: a week's 30 GPU-hours are used up


def test_the_day_series_climbs_to_team_usage_day_by_day(teams):
    vision = teams[0]
    series = day_points(team_usage(vision, now=NOW))
    assert [p.day.day for p in series] == list(range(1, 19))          # Nov 1 .. today, the 18th
    assert series[-1].end == NOW and series[-1].gpu_hours == pytest.approx(team_usage(vision, now=NOW).gpu_hours)
    assert series[0].gpu_hours == pytest.approx(2 * 2)                  # the job across midnight: 2 h of Nov 1
    assert all(a.gpu_hours <= b.gpu_hours for a, b in pairwise(series))
    assert day_points(team_usage(teams[2], now=NOW))[-1].gpu_hours == 0


def test_days_follow_local_midnight_through_a_clock_change(settings, alice):
    settings.TIME_ZONE = "Europe/Berlin"
    team = Team.objects.create(name="qt-dst")
    # One GPU from Oct 24 to Oct 27, local time: Oct 25 (clocks go back) has 25 hours.
    row(alice, team, datetime(2026, 10, 23, 22, tzinfo=UTC), datetime(2026, 10, 26, 23, tzinfo=UTC), gpus=1)
    series = {p.day.day: p.gpu_hours for p in day_points(team_usage(team, now=datetime(2026, 10, 31, 12, tzinfo=UTC)))}
    assert series[24] == pytest.approx(24)
    assert series[25] - series[24] == pytest.approx(25)
    assert series[26] - series[25] == pytest.approx(24)
