"""The admin's team list: every team side by side with this period's use, sorted as asked."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from portal.jobs.models import Job
from portal.teams.models import Team, TeamPolicy

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def used(team: Team, owner, hours: float, gpus: int = 1) -> None:
    end = timezone.now() - timedelta(minutes=1)
    Job.objects.create(owner=owner, team=team, name="j", state="COMPLETED", nodes=1, gpus_per_node=gpus,
                       start_time=end - timedelta(hours=hours), end_time=end, submit_time=end)


@pytest.fixture
def teams(alice, cluster):
    """qt-small (1 GPU-hour of a 2-hour budget), qt-big (3 GPU-hours of 100), qt-none (unused)."""
    small, big, _ = (Team.objects.create(name=n) for n in ("qt-small", "qt-big", "qt-none"))
    TeamPolicy.objects.create(team=small, gpu_hours_budget=2)
    TeamPolicy.objects.create(team=big, gpu_hours_budget=100, max_gpus=8)
    used(small, alice, 1)
    used(big, alice, 1.5, gpus=2)
    Job.objects.create(owner=alice, team=big, name="r", state="RUNNING", nodes=1, gpus_per_node=4,
                       start_time=timezone.now(), submit_time=timezone.now())
    return {"small": small, "big": big}


def order(html: str) -> list[str]:
    return re.findall(r'<tr id="team-([a-z0-9_-]+)">', html)


def test_it_sorts_by_use_by_default_and_as_asked(admin_user, teams):
    client = logged_in(admin_user)
    assert order(client.get("/teams/").content.decode()) == ["qt-big", "qt-small", "qt-none"]
    assert order(client.get("/teams/?sort=name").content.decode()) == ["qt-big", "qt-none", "qt-small"]
    assert order(client.get("/teams/?sort=budget").content.decode()) == ["qt-small", "qt-big", "qt-none"]
    assert order(client.get("/teams/?sort=running").content.decode())[0] == "qt-big"
    for odd in ("<script>", "use;drop", "", "x" * 500):
        resp = client.get("/teams/", {"sort": odd})
        assert resp.status_code == 200 and order(resp.content.decode())[0] == "qt-big"
        assert "<script>" not in resp.content.decode().split("<main", 1)[1]


def test_each_row_shows_the_figures_and_links(admin_user, teams):
    html = logged_in(admin_user).get("/teams/").content.decode()
    small = html[html.index('<tr id="team-qt-small">'):]
    small = small[:small.index("</tr>")]
    assert '<td class="num">1.0</td>' in small and "50% of 2" in small
    big = html[html.index('<tr id="team-qt-big">'):]
    big = big[:big.index("</tr>")]
    assert '<td class="num">3.0</td>' in big and "3% of 100" in big and '<td class="num">4</td>' in big
    assert 'href="/teams/qt-big/"' in big and 'href="/teams/qt-big/policy/"' in big
    assert "max 8 GPUs" in big
    assert 'aria-sort="descending"' in html


def test_the_list_costs_the_same_queries_with_more_teams(admin_user, teams, alice, django_assert_max_num_queries):
    client = logged_in(admin_user)
    client.get("/teams/")
    with django_assert_max_num_queries(30) as few:
        client.get("/teams/")
    for n in range(8):
        team = Team.objects.create(name=f"qt-more-{n}")
        TeamPolicy.objects.create(team=team, gpu_hours_budget=10, budget_period="week" if n % 2 else "month")
        used(team, alice, 0.5)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(order(client.get("/teams/").content.decode())) == 11
