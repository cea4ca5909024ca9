"""Who may see and control which jobs, on every page: foreign jobs are a 404, never a 403."""

from __future__ import annotations

import pytest

from portal.jobs.models import JobEvent
from tests.jobs.views_support import VISION_LEAD, build_world, client_for, make_job

pytestmark = pytest.mark.django_db

# Each person and the jobs they may see: own jobs; leads also their team's; admins all.
VISIBLE = {
    "alice": {"alice-job"},
    "bob": {"bob-job"},
    VISION_LEAD: {"alice-job", "bob-job"},
    "carol": {"carol-job", "erin-job"},
    "erin": {"erin-job"},
    "admin": {"alice-job", "bob-job", "carol-job", "erin-job"},
    "charlie": set(),
}
JOB_PAGES = ["/jobs/{id}/", "/jobs/{id}/status/", "/jobs/{id}/output/", "/jobs/{id}/output/download/",
             "/jobs/new/?clone={id}"]


@pytest.fixture
def world(make_user):
    people = build_world(make_user)
    people["jobs"] = {
        f"{owner}-job": make_job(people[owner], people[team], name=f"{owner}-job")
        for owner, team in [("alice", "vision"), ("bob", "vision"), ("carol", "nlp"), ("erin", "nlp")]
    }
    return people


@pytest.mark.parametrize("who", sorted(VISIBLE))
def test_the_list_shows_exactly_what_each_person_may_see(world, who):
    resp = client_for(world[who]).get("/jobs/")
    assert {row.job.name for row in resp.context["rows"]} == VISIBLE[who]


@pytest.mark.parametrize("who", sorted(VISIBLE))
def test_job_pages_are_404_for_jobs_a_person_may_not_see(world, who):
    client = client_for(world[who])
    for name, job in world["jobs"].items():
        for page in JOB_PAGES[:3]:
            status = client.get(page.format(id=job.pk)).status_code
            assert status == (200 if name in VISIBLE[who] else 404), (who, name, page)
        if name not in VISIBLE[who]:
            assert client.get(JOB_PAGES[3].format(id=job.pk)).status_code == 404
            if who != "charlie":  # charlie has no team, so no submit form at all
                assert client.get(JOB_PAGES[4].format(id=job.pk)).status_code == 404


@pytest.mark.parametrize("who", sorted(VISIBLE))
def test_controls_on_a_foreign_job_are_404_and_leave_no_trace(world, who):
    client = client_for(world[who])
    for name, job in world["jobs"].items():
        if name in VISIBLE[who]:
            continue
        for action in ("cancel", "hold", "release", "requeue"):
            assert client.post(f"/jobs/{job.pk}/{action}/").status_code == 404
    assert not JobEvent.objects.exists()


@pytest.mark.parametrize("who", ["alice", VISION_LEAD, "admin"])
def test_owner_lead_and_admin_see_the_controls(world, who):
    job = world["jobs"]["alice-job"]
    job.slurm_job_id = 999_999
    job.save(update_fields=["slurm_job_id"])
    page = client_for(world[who]).get(f"/jobs/{job.pk}/").content.decode()
    assert f'action="/jobs/{job.pk}/cancel/"' in page
    assert f'action="/jobs/{job.pk}/requeue/"' in page


def test_a_missing_or_absurd_job_id_is_a_404(world):
    client = client_for(world["admin"])
    assert client.get("/jobs/987654321/").status_code == 404
    assert client.get("/jobs/99999999999999999999999999/").status_code == 404
    assert client.post("/jobs/99999999999999999999999999/cancel/").status_code == 404


def test_every_job_page_needs_a_login(world, client):
    job = world["jobs"]["alice-job"]
    for page in [*JOB_PAGES, "/jobs/", "/jobs/rows/", "/jobs/new/", "/jobs/templates/", "/tokens/"]:
        resp = client.get(page.format(id=job.pk))
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/"), page
    resp = client.post(f"/jobs/{job.pk}/cancel/")
    assert resp.status_code == 302 and not JobEvent.objects.exists()
