"""The job list: who sees what, filters, sorting, keyset paging and the live rows partial."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.jobs.models import Job
from tests.jobs.views_support import build_world, client_for, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user):
    return build_world(make_user)


def _listed(resp) -> set[str]:
    return {job.name for job in (row.job for row in resp.context["rows"])}


def test_the_list_needs_a_login(client):
    resp = client.get("/jobs/")
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")


def test_it_shows_state_words_gpus_owner_team_nodes_and_elapsed(world):
    started = timezone.now() - timedelta(minutes=5, seconds=3)
    make_job(world["alice"], world["vision"], name="resnet", state="RUNNING", nodes=2, gpus_per_node=4,
             nodes_list="gpu[01-02]", start_time=started, time_limit_min=10)
    html = client_for(world["alice"]).get("/jobs/").content.decode()
    assert "resnet" in html
    assert 'class="badge info"' in html and ">Running<" in html
    assert ">8 <span" in html and "h100" in html      # 2 nodes x 4 GPUs
    assert re.search(r"href=\"/nodes/gpu01/\">gpu01</a>, <a [^>]*href=\"/nodes/gpu02/\">gpu02<", html)  # linked
    assert "5m 0" in html                               # elapsed 5m 03s
    assert "width: 50%" in html                         # half of the 10-minute limit used


def test_pending_jobs_say_waiting_and_failed_ones_are_red(world):
    make_job(world["alice"], world["vision"], name="queued", state="PENDING", start_time=None, reason="Priority")
    make_job(world["alice"], world["vision"], name="broken", state="FAILED", exit_code=1)
    html = client_for(world["alice"]).get("/jobs/").content.decode()
    assert 'class="badge warn"' in html and ">Waiting<" in html
    assert 'title="Other jobs with a higher priority are ahead' in html  # why, in plain words, on hover
    assert 'class="badge bad"' in html and ">Failed<" in html


def test_it_filters_by_state_team_and_submit_date(world):
    vision, nlp, admin = world["vision"], world["nlp"], world["admin"]
    old = timezone.now() - timedelta(days=10)
    make_job(world["alice"], vision, name="v-running")
    make_job(world["alice"], vision, name="v-done", state="COMPLETED")
    make_job(world["erin"], nlp, name="n-running")
    make_job(world["alice"], vision, name="v-old", state="COMPLETED", submit_time=old)
    client = client_for(admin)
    assert _listed(client.get("/jobs/", {"state": "RUNNING"})) == {"v-running", "n-running"}
    assert _listed(client.get("/jobs/", {"state": "finished"})) == {"v-done", "v-old"}
    assert _listed(client.get("/jobs/", {"state": "active", "team": "nlp"})) == {"n-running"}
    day = (old + timedelta(days=1)).date().isoformat()
    assert _listed(client.get("/jobs/", {"submitted_to": day})) == {"v-old"}
    assert "v-old" not in _listed(client.get("/jobs/", {"submitted_from": day}))


def test_it_sorts_newest_oldest_and_by_name(world):
    for name in ("bravo", "alpha", "charlie"):
        make_job(world["alice"], world["vision"], name=name)
    client = client_for(world["alice"])
    names = lambda resp: [row.job.name for row in resp.context["rows"]]  # noqa: E731
    assert names(client.get("/jobs/")) == ["charlie", "alpha", "bravo"]
    assert names(client.get("/jobs/", {"sort": "oldest"})) == ["bravo", "alpha", "charlie"]
    assert names(client.get("/jobs/", {"sort": "name"})) == ["alpha", "bravo", "charlie"]


def test_bad_filters_are_form_errors_not_a_crash(world):
    client = client_for(world["alice"])
    for params in ({"submitted_from": "yesterday"}, {"state": "EXPLODED"}, {"team": "nlp"},
                   {"after": "-3"}, {"before": "99999999999999999999999"}, {"sort": "random()"},
                   {"submitted_from": "2025-05-02", "submitted_to": "2025-05-01"}):
        resp = client.get("/jobs/", params)
        assert resp.status_code == 400, params
        assert b'class="errors"' in resp.content


def test_keyset_pages_walk_forward_and_back_without_counting(world):
    alice, vision = world["alice"], world["vision"]
    Job.objects.bulk_create([Job(owner=alice, team=vision, name=f"job-{i:03d}", state="COMPLETED")
                             for i in range(120)])
    client = client_for(alice)
    with CaptureQueriesContext(connection) as queries:
        first = client.get("/jobs/")
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(queries.captured_queries) <= 8  # a fixed handful, not one per row
    assert not [q for q in queries.captured_queries if '"script"' in q["sql"]]  # only the listed columns
    assert [r.job.name for r in first.context["rows"]][:2] == ["job-119", "job-118"]
    assert len(first.context["rows"]) == 50 and first.context["page"].previous_cursor is None

    second = client.get("/jobs/", {"after": first.context["page"].next_cursor})
    assert second.context["rows"][0].job.name == "job-069"
    third = client.get("/jobs/", {"after": second.context["page"].next_cursor})
    assert len(third.context["rows"]) == 20 and third.context["page"].next_cursor is None

    back = client.get("/jobs/", {"before": third.context["page"].previous_cursor})
    assert [r.job.name for r in back.context["rows"]] == [r.job.name for r in second.context["rows"]]
    assert b'rel="prev"' in back.content and b'rel="next"' in back.content


def test_paging_by_name_keeps_the_filters(world):
    alice, vision = world["alice"], world["vision"]
    Job.objects.bulk_create([Job(owner=alice, team=vision, name=f"n{i:03d}", state="FAILED") for i in range(60)])
    make_job(alice, vision, name="n000-running")
    client = client_for(alice)
    first = client.get("/jobs/", {"sort": "name", "state": "FAILED"})
    assert [r.job.name for r in first.context["rows"]][:2] == ["n000", "n001"]
    next_link = f"sort=name&amp;state=FAILED&amp;after={first.context['page'].next_cursor}"
    assert next_link.encode() in first.content
    second = client.get("/jobs/", {"sort": "name", "state": "FAILED", "after": first.context["page"].next_cursor})
    assert [r.job.name for r in second.context["rows"]] == [f"n{i:03d}" for i in range(50, 60)]


def test_the_rows_partial_polls_and_shows_a_state_change(world):
    job = make_job(world["alice"], world["vision"], name="watch-me", state="PENDING", start_time=None)
    client = client_for(world["alice"])
    page = client.get("/jobs/", {"state": "active"}).content.decode()
    assert 'hx-get="/jobs/rows/?state=active"' in page and "every 2s" in page
    Job.objects.filter(pk=job.pk).update(state="RUNNING")
    rows = client.get("/jobs/rows/", {"state": "active"})
    assert rows.status_code == 200
    assert b"<html" not in rows.content                   # just the partial
    assert b'id="job-rows"' in rows.content and b">Running<" in rows.content


def test_a_user_with_no_jobs_is_pointed_at_the_submit_form(world):
    resp = client_for(world["bob"]).get("/jobs/")
    assert b"No jobs yet" in resp.content and b'href="/jobs/new/"' in resp.content
