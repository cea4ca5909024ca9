"""The team page (/teams/<name>/): who may see it, and that what it shows is what team_usage and
Slurm's sshare say, on real job rows and a real Slurm account."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from portal.jobs.models import Job
from portal.quotas.charts import hours_text
from portal.quotas.usage import team_usage
from portal.slurm import gateway
from portal.teams.models import Membership, Team, TeamPolicy
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def team(unique, alice, bob, cluster):
    """qt-<unique>: alice lead, bob member; no Slurm account (the page says so)."""
    team = Team.objects.create(name=f"qt-{unique}", description="Team page test")
    Membership.objects.create(user=alice, team=team, role=Membership.Role.LEAD)
    Membership.objects.create(user=bob, team=team)
    return team


@pytest.fixture
def slurm_team(team, qt_names):
    """`team` with its Slurm account and both members' associations (removed after the test)."""
    qt_names.append(team.name)
    gateway.ensure_account(team.name)
    for user in ("alice", "bob"):
        gateway.ensure_association(user, team.name)
    return team


def job(owner, team, **fields) -> Job:
    now = timezone.now()
    values = {"name": f"{owner.username}-job", "state": "COMPLETED", "partition": "gpu", "nodes": 1,
              "gpus_per_node": 2, "gpu_type": "h100", "submit_time": now - timedelta(hours=3),
              "start_time": now - timedelta(hours=3), "end_time": now - timedelta(hours=1)}
    return Job.objects.create(owner=owner, team=team, **{**values, **fields})


def running(owner, team, **fields) -> Job:
    return job(owner, team, state="RUNNING", start_time=timezone.now() - timedelta(minutes=30), end_time=None,
               gpus_per_node=4, **fields)


def tile(html: str, tile_id: str) -> float:
    match = re.search(rf'id="{tile_id}"><span class="big">([\d.,-]+)</span>', html)
    assert match, f"no {tile_id} tile"
    return float(match[1].replace(",", ""))


# ---------------------------------------------------------------- rights

def test_members_and_leads_see_their_team(team, alice, bob):
    for user in (alice, bob):
        resp = logged_in(user).get(f"/teams/{team.name}/")
        assert resp.status_code == 200
        assert f"Team <span class=\"mono\">{team.name}</span>" in resp.content.decode()
        assert logged_in(user).get(f"/teams/{team.name}/live/").status_code == 200


def test_a_non_member_is_refused_with_the_styled_page(team, charlie):
    for path in (f"/teams/{team.name}/", f"/teams/{team.name}/live/"):
        resp = logged_in(charlie).get(path)
        assert resp.status_code == 403
        assert f"Only members of {team.name} and admins see its page." in resp.content.decode()
        assert "GPU-hours" not in resp.content.decode()


def test_admins_see_every_team_and_the_policy_link(team, admin_user):
    html = logged_in(admin_user).get(f"/teams/{team.name}/").content.decode()
    assert f'href="/teams/{team.name}/policy/"' in html
    assert f'href="/teams/{team.name}/policy/"' not in logged_in(team.memberships.first().user).get(
        f"/teams/{team.name}/").content.decode()


def test_anonymous_is_sent_to_login_and_unknown_or_odd_names_are_404(team, alice):
    resp = Client().get(f"/teams/{team.name}/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]
    for name in ("qt-nosuch", "A%20B", "x" * 300, "%3Cscript%3E"):
        assert logged_in(alice).get(f"/teams/{name}/").status_code == 404
    assert logged_in(alice).post(f"/teams/{team.name}/").status_code == 405


# ---------------------------------------------------------------- figures

def test_the_figures_are_team_usages(team, alice, bob):
    job(alice, team)                     # 2 GPUs x 2 h = 4 GPU-hours, finished
    running(bob, team)                   # 4 GPUs, half an hour so far
    job(bob, team, gpus_per_node=0)      # CPU only: no GPU-hours
    html = logged_in(alice).get(f"/teams/{team.name}/").content.decode()
    usage = team_usage(team)
    assert tile(html, "tile-used") == pytest.approx(usage.gpu_hours, abs=0.05)
    assert tile(html, "tile-running") == usage.running_gpus == 4
    members = html[html.index('id="team-members"'):html.index('id="held-jobs"')]
    alice_row = members[members.index('id="member-alice"'):members.index('id="member-bob"')]
    assert ">4.0</td>" in alice_row and "lead" in alice_row
    assert "1 job · 4 GPUs" in members
    assert "no GPU-hour budget" in html


def test_a_budget_shows_as_burn_down_with_its_figures_as_text(team, alice):
    TeamPolicy.objects.create(team=team, gpu_hours_budget=10, budget_period="week", over_budget="hard")
    job(alice, team)                     # 4 of 10 used
    html = logged_in(alice).get(f"/teams/{team.name}/").content.decode()
    usage = team_usage(team)
    assert f"{hours_text(usage.gpu_hours)} of 10.0 GPU-hours used (40%), 6.0 left" in html
    assert 'role="img" aria-labelledby="burn-down-title" aria-describedby="burn-down-text"' in html
    assert 'class="ideal"' in html and 'class="actual"' in html
    assert "resets <time" in html and usage.end.isoformat() in html
    assert "per week" in html and "hard: new jobs are refused and held" in html


def test_a_used_up_hard_budget_says_what_happens(team, alice):
    TeamPolicy.objects.create(team=team, gpu_hours_budget=3, over_budget="hard")
    job(alice, team)
    html = logged_in(alice).get(f"/teams/{team.name}/").content.decode()
    assert "4.0 of 3.0 GPU-hours used (133%), 1.0 over budget" in html
    assert '<span class="big">1.0</span> GPU-hours over budget' in html
    assert "new jobs are refused and waiting ones held until it resets" in html
    assert 'class="actual over"' in html


def test_held_jobs_are_listed_in_plain_words_and_linked_for_those_who_may_open_them(team, alice, bob):
    held = job(bob, team, name="<b>bobs-sweep</b>", state="PENDING", start_time=None, end_time=None,
               reason="AssocGrpGRES", slurm_job_id=424242)
    job(bob, team, name="busy-wait", state="PENDING", start_time=None, end_time=None, reason="Resources")
    job(alice, team, name="over-qos", state="PENDING", start_time=None, end_time=None, reason="QOSMaxGRESPerJob")
    lead_html = logged_in(alice).get(f"/teams/{team.name}/").content.decode()
    section = lead_html[lead_html.index('id="held-jobs"'):lead_html.index('id="fair-share"')]
    assert "Your team is using all the GPUs its limit allows at once" in section
    assert "This job asks for more GPUs than one job may in its quality of service (QOS)" in section
    assert "busy-wait" not in section                       # the cluster is busy: no limit holds it
    assert f'href="/jobs/{held.pk}/"' in section            # the lead may open a member's job
    assert "&lt;b&gt;bobs-sweep&lt;/b&gt;" in section and "<b>bobs-sweep" not in section
    member_html = logged_in(bob).get(f"/teams/{team.name}/").content.decode()
    section = member_html[member_html.index('id="held-jobs"'):member_html.index('id="fair-share"')]
    assert "a teammate's job" in section and "over-qos" not in section   # alice's job: not bob's to open
    assert f'href="/jobs/{held.pk}/"' in section


def test_fair_share_is_slurms(slurm_team, alice):
    team = slurm_team
    TeamPolicy.objects.create(team=team, shares=5)
    gateway.set_account_limits(team.name, fairshare=5)

    def own_row():
        rows = [r for r in gateway.fair_share([team.name]) if not r.user and r.raw_shares == 5]
        return rows[0] if rows else None

    row = wait_until(own_row, timeout=15, what="Slurm to hold the share")
    html = logged_in(alice).get(f"/teams/{team.name}/").content.decode()
    section = html[html.index('id="fair-share"'):html.index('id="team-policy"')]
    assert f"<dd>{row.norm_shares:.0%}</dd>" in section
    assert "Fair-share factor" in section and "higher starts sooner" in section


def test_a_team_slurm_does_not_know_says_so(team, alice):
    html = logged_in(alice).get(f"/teams/{team.name}/").content.decode()
    assert "Slurm has no account for this team yet" in html


def test_the_page_costs_the_same_queries_with_more_jobs_and_members(team, alice, bob, make_user,
                                                                    django_assert_max_num_queries):
    job(alice, team)
    running(alice, team)   # every kind of row present once: more of them must cost no more queries
    client = logged_in(alice)
    client.get(f"/teams/{team.name}/")   # warm the session
    with django_assert_max_num_queries(20) as few:
        client.get(f"/teams/{team.name}/")
    for n in range(6):
        member = make_user(f"qt-user-{n}")
        Membership.objects.create(user=member, team=team)
        job(member, team)
        running(member, team)
        job(member, team, state="PENDING", start_time=None, end_time=None, reason="AssocGrpGRES")
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(f"/teams/{team.name}/")


# ---------------------------------------------------------------- links to it

def test_home_job_pages_and_nav_link_the_team_page(team, alice):
    mine = job(alice, team)
    client = logged_in(alice)
    link = f'href="/teams/{team.name}/"'
    assert link in client.get("/").content.decode()
    assert link in client.get("/jobs/").content.decode()
    assert link in client.get(f"/jobs/{mine.pk}/").content.decode()
    assert f'<a href="/teams/{team.name}/" class="active" aria-current="page">Team</a>' in \
        client.get(f"/teams/{team.name}/").content.decode()


def test_without_slurm_the_page_still_shows_its_figures_and_says_what_is_missing(team, alice, admin_user,
                                                                                 monkeypatch):
    job(alice, team)
    monkeypatch.setenv("PATH", "/nonexistent")      # no Slurm command can run: sshare is "unavailable"
    resp = logged_in(alice).get(f"/teams/{team.name}/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert tile(html, "tile-used") == pytest.approx(4.0)
    fair = html[html.index('id="fair-share"'):html.index('id="team-policy"')]
    assert 'class="errors"' in fair and "sshare" in fair
    listing = logged_in(admin_user).get("/teams/")
    assert listing.status_code == 200 and team.name in listing.content.decode()
