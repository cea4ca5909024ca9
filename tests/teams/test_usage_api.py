"""GET /api/v1/teams/{name}/usage: members and admins only, clear errors, the period asked for."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portal.jobs.models import Job
from portal.quotas import rollup
from portal.teams.models import Membership, Team, TeamPolicy
from tests.teams.test_policy_api import Api

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def _berlin(settings):
    settings.TIME_ZONE = "Europe/Berlin"


@pytest.fixture
def team(alice):
    team = Team.objects.create(name="qt-use")   # never reconciled here: no Slurm account made
    Membership.objects.create(user=alice, team=team)
    return team


def path(name: str = "qt-use", **query: str) -> str:
    return f"/api/v1/teams/{name}/usage" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def job(team, owner, start: datetime, hours: float, gpus: int) -> Job:
    return Job.objects.create(owner=owner, team=team, name="j", state="COMPLETED", start_time=start,
                              end_time=start + timedelta(hours=hours), elapsed_s=round(hours * 3600), nodes=1,
                              gpus_per_node=gpus, gpu_type="h100", accounted=True)


def last_month_start() -> datetime:
    first = datetime.now(tz=BERLIN).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=1)


def test_a_member_sees_the_teams_usage(team, alice):
    TeamPolicy.objects.create(team=team, gpu_hours_budget=100)
    now = datetime.now(tz=BERLIN)
    if now.hour == 0:
        pytest.skip("the job below would end in the future")
    job(team, alice, now.replace(hour=0, minute=5, second=0, microsecond=0), 0.5, gpus=4)
    rollup.fold_changed_jobs()

    body = Api(alice).get(path()).json()

    assert body["period"] == "month" and body["time_zone"] == "Europe/Berlin"
    assert body["start"] == now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat()
    assert body["gpu_hours"] == pytest.approx(2)
    assert body["budget"] == 100 and body["left"] == pytest.approx(98) and body["over_budget"] == ""
    assert body["by_user"] == [{"user": "alice", "gpu_hours": pytest.approx(2)}]
    assert body["by_type"] == {"h100": pytest.approx(2)}
    assert len(body["by_day"]) == now.day
    assert body["by_day"][-1] == {"day": now.date().isoformat(), "gpu_hours": pytest.approx(2),
                                  "cumulative": pytest.approx(2)}


def test_an_admin_sees_any_team(team, alice, admin_user):
    assert Api(admin_user).get(path()).status_code == 200


def test_someone_outside_the_team_is_refused(team, bob):
    response = Api(bob).get(path())
    assert response.status_code == 403 and "members" in response.json()["detail"]


def test_an_unknown_team_is_404_whoever_asks(admin_user, bob):
    assert Api(admin_user).get(path("qt-nope")).status_code == 404
    assert Api(bob).get(path("Not A Team!")).status_code == 404


def test_without_a_token_it_is_401(team, client):
    assert client.get(path()).status_code == 401


@pytest.mark.parametrize("query", [{"period": "year"}, {"at": "yesterday"}, {"at": "2026-13-01"}])
def test_bad_query_values_are_422_not_500(team, alice, query):
    response = Api(alice).get(path(**query))
    assert response.status_code == 422 and response.json()["detail"]


def test_a_future_moment_is_400(team, alice):
    response = Api(alice).get(path(at=(datetime.now(tz=BERLIN) + timedelta(days=40)).date().isoformat()))
    assert response.status_code == 400 and "future" in response.json()["detail"]


def test_at_picks_a_past_period_counted_to_its_end(team, alice):
    start = last_month_start()
    job(team, alice, start + timedelta(days=3, hours=10), 2, gpus=2)    # 4 GPU-h last month
    job(team, alice, start + timedelta(days=25, hours=10), 1, gpus=1)   # 1 GPU-h, later that month
    rollup.fold_changed_jobs()

    body = Api(alice).get(path(at=(start + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S"))).json()

    assert body["start"] == start.isoformat()
    assert body["gpu_hours"] == pytest.approx(5)
    assert body["by_day"][-1]["cumulative"] == pytest.approx(5)
    assert Api(alice).get(path()).json()["gpu_hours"] == 0   # this month: nothing


def test_week_overrides_the_policys_month(team, alice):
    now = datetime.now(tz=BERLIN)
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    body = Api(alice).get(path(period="week")).json()
    assert body["period"] == "week" and body["start"] == monday.isoformat()
    assert len(body["by_day"]) == now.weekday() + 1
