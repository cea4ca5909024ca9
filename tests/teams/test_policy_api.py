"""PUT/GET /api/v1/teams/{name}/policy: admins set it, members read it, every change audited."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from portal.api.services import issue_token
from portal.teams.models import PolicyChange, Team, TeamPolicy

pytestmark = pytest.mark.django_db


class Api:
    def __init__(self, user):
        token, _ = issue_token(user=user, name="test")
        self.client, self.headers = Client(), {"Authorization": f"Bearer {token}"}

    def get(self, path: str):
        return self.client.get(path, headers=self.headers)

    def put(self, path: str, body: object):
        return self.client.put(path, data=json.dumps(body), content_type="application/json", headers=self.headers)


@pytest.fixture
def as_admin(admin_user):
    return Api(admin_user)


@pytest.fixture
def team(db):
    return Team.objects.create(name="qt-api")   # never reconciled here: no Slurm account made


def path(name: str = "qt-api") -> str:
    return f"/api/v1/teams/{name}/policy"


def test_it_sets_the_fields_given(as_admin, team, cluster):
    resp = as_admin.put(path(), {"shares": 70, "max_gpus": 8, "max_gpus_by_type": {"h100": 4},
                                 "gpu_hours_budget": 1000, "budget_period": "week", "over_budget": "soft"})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert {k: body[k] for k in ("team", "shares", "max_gpus", "max_gpus_by_type", "gpu_hours_budget",
                                 "budget_period", "over_budget")} == {
        "team": "qt-api", "shares": 70, "max_gpus": 8, "max_gpus_by_type": {"h100": 4},
        "gpu_hours_budget": 1000.0, "budget_period": "week", "over_budget": "soft"}


def test_fields_left_out_stay_and_null_clears(as_admin, team):
    TeamPolicy.objects.create(team=team, shares=70, max_gpus=8, gpu_hours_budget=500)
    resp = as_admin.put(path(), {"max_gpus": None})
    assert resp.status_code == 200, resp.content
    policy = TeamPolicy.objects.get(team=team)
    assert (policy.shares, policy.max_gpus, policy.gpu_hours_budget) == (70, None, 500)


def test_every_change_is_audited_with_who_old_and_new(as_admin, team):
    TeamPolicy.objects.create(team=team, shares=70)
    as_admin.put(path(), {"shares": 30, "max_gpus": 4, "over_budget": "hard"})   # hard is the default already
    rows = {c.field: (c.changed_by_name, c.old_value, c.new_value) for c in PolicyChange.objects.filter(team=team)}
    assert rows == {"shares": ("admin", 70, 30), "max_gpus": ("admin", None, 4)}
    assert all(c.changed_at and c.team_name == "qt-api" for c in PolicyChange.objects.all())


def test_the_audit_outlives_the_team(as_admin, team):
    as_admin.put(path(), {"max_gpus": 4})
    team.delete()
    assert PolicyChange.objects.get().team_name == "qt-api"


def test_a_member_may_read_but_not_set(alice, team):
    team.memberships.create(user=alice, role="lead")
    api = Api(alice)
    assert api.get(path()).status_code == 200
    resp = api.put(path(), {"max_gpus": 100})
    assert resp.status_code == 403
    assert not PolicyChange.objects.exists()


def test_others_may_not_read(charlie, team):
    assert Api(charlie).get(path()).status_code == 403


def test_an_admin_reads_the_defaults_of_a_team_without_policy(as_admin, team):
    body = as_admin.get(path()).json()
    assert body["shares"] is None and body["max_gpus_by_type"] == {} and body["updated_at"] is None


def test_an_unknown_team_is_404(as_admin):
    assert as_admin.put(path("qt-nosuch"), {"max_gpus": 1}).status_code == 404
    assert as_admin.get(path("Not A Team")).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"shares": 0}, "shares"),
    ({"max_gpus": -1}, "max_gpus"),
    ({"max_gpus_by_type": {"h100": -2}}, "max_gpus_by_type"),
    ({"max_gpus_by_type": {"h100,cpu=9": 1}}, "max_gpus_by_type"),
    ({"budget_period": "year"}, "budget_period"),
    ({"gpus": 3}, "gpus"),
])
def test_a_malformed_field_is_422_naming_it(as_admin, team, body, field):
    resp = as_admin.put(path(), body)
    assert resp.status_code == 422, resp.content
    assert any(field in err["loc"] for err in resp.json()["errors"])
    assert not TeamPolicy.objects.exists()


@pytest.mark.parametrize("field", ["budget_period", "over_budget"])
def test_a_field_that_cannot_be_cleared_is_422(as_admin, team, field):
    resp = as_admin.put(path(), {field: None, "max_gpus": 3})
    assert resp.status_code == 422
    assert any(field in err["loc"] for err in resp.json()["errors"])
    assert not TeamPolicy.objects.exists()


def test_a_gpu_type_slurm_does_not_track_is_400(as_admin, team, cluster):
    resp = as_admin.put(path(), {"max_gpus_by_type": {"a100": 2}})
    assert resp.status_code == 400
    assert "a100" in resp.json()["errors"]["max_gpus_by_type"][0]
    assert "h100" in resp.json()["errors"]["max_gpus_by_type"][0]


def test_admins_read_the_audit_trail_newest_first(as_admin, team, alice):
    as_admin.put(path(), {"max_gpus": 4})
    as_admin.put(path(), {"max_gpus": None})
    resp = as_admin.get(path() + "/changes")
    assert resp.status_code == 200
    assert [(c["field"], c["old_value"], c["new_value"], c["changed_by"]) for c in resp.json()] == [
        ("max_gpus", 4, None, "admin"), ("max_gpus", None, 4, "admin")]
    team.memberships.create(user=alice, role="lead")
    assert Api(alice).get(path() + "/changes").status_code == 403
