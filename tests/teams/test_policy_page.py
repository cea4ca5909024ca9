"""The admin's team policy page: the same service as the API, with CSRF, audit and Slurm's view."""

from __future__ import annotations

import pytest
from django.test import Client

from portal.quotas import coordinators
from portal.teams.models import PolicyChange, Team, TeamPolicy

pytestmark = pytest.mark.django_db

URL = "/teams/qt-page/policy/"
FORM = {"shares": "70", "max_gpus": "8", "max_gpus_by_type": "h100=4", "gpu_hours_budget": "",
        "budget_period": "week", "over_budget": "soft"}


@pytest.fixture
def team(db):
    return Team.objects.create(name="qt-page")   # never reconciled here: no Slurm account made


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def test_it_saves_the_policy_and_audits_it(admin_user, team, cluster):
    resp = logged_in(admin_user).post(URL, FORM)
    assert resp.status_code == 302
    policy = TeamPolicy.objects.get(team=team)
    assert (policy.shares, policy.max_gpus, policy.max_gpus_by_type, policy.gpu_hours_budget,
            policy.budget_period, policy.over_budget) == (70, 8, {"h100": 4}, None, "week", "soft")
    assert set(PolicyChange.objects.values_list("field", flat=True)) == {
        "shares", "max_gpus", "max_gpus_by_type", "budget_period", "over_budget"}


def test_the_page_shows_the_policy_the_audit_and_what_slurm_lacks(admin_user, team, cluster):
    logged_in(admin_user).post(URL, FORM)
    html = logged_in(admin_user).get(URL).content.decode()
    assert 'value="h100=4"' in html and 'value="70"' in html
    assert "max_gpus</span>: none → 8" in html
    assert "add account qt-page" in html   # Slurm has no account for it yet


def test_an_empty_box_clears_a_limit(admin_user, team, cluster):
    TeamPolicy.objects.create(team=team, max_gpus=8, max_gpus_by_type={"h100": 4})
    logged_in(admin_user).post(URL, {**FORM, "max_gpus": "", "max_gpus_by_type": ""})
    policy = TeamPolicy.objects.get(team=team)
    assert (policy.max_gpus, policy.max_gpus_by_type) == (None, {})


def test_a_bad_value_is_shown_next_to_its_field(admin_user, team, cluster):
    resp = logged_in(admin_user).post(URL, {**FORM, "max_gpus_by_type": "h100:4"})
    assert resp.status_code == 400
    assert "is not TYPE=COUNT" in resp.content.decode()
    resp = logged_in(admin_user).post(URL, {**FORM, "max_gpus_by_type": "a100=4"})
    assert resp.status_code == 400
    assert "Slurm tracks no GPU type a100" in resp.content.decode()
    assert not TeamPolicy.objects.exists()


def test_only_admins_see_or_post(alice, team):
    team.memberships.create(user=alice, role="lead")
    client = logged_in(alice)
    assert client.get(URL).status_code == 403
    assert client.post(URL, FORM).status_code == 403
    assert client.get("/teams/").status_code == 403
    assert not TeamPolicy.objects.exists()


def test_a_post_without_the_csrf_token_is_refused(admin_user, team):
    assert logged_in(admin_user, enforce_csrf_checks=True).post(URL, FORM).status_code == 403
    assert not TeamPolicy.objects.exists()


def test_the_list_shows_every_team_and_whether_slurm_is_in_step(admin_user, team, cluster):
    Team.objects.create(name="qt-other")
    TeamPolicy.objects.create(team=team, max_gpus=8)
    html = logged_in(admin_user).get("/teams/").content.decode()
    assert "qt-page" in html and "qt-other" in html and "No policy set" in html
    assert "2 differences" in html   # neither team has a Slurm account yet: add it, set its limits


def test_an_unknown_team_is_404(admin_user):
    assert logged_in(admin_user).get("/teams/qt-nosuch/policy/").status_code == 404


def test_while_coordinators_are_read_again_the_page_says_so_instead_of_hiding_it(admin_user, team, cluster):
    # Every test starts with no copy of the coordinators: the page does not wait ~10 s (at
    # 1,000 teams) for a full read (the worker's next run asks for one) and says what it cannot show yet.
    html = logged_in(admin_user).get(URL).content.decode()
    assert "coordinator rights are being read again" in html
    coordinators.refresh()   # what the worker does
    html = logged_in(admin_user).get(URL).content.decode()
    assert "coordinator rights are being read again" not in html
    assert "add account qt-page" in html
