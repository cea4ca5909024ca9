"""A control the portal sent stays visible ("cancel requested at ...") until the tracker sees Slurm
carry it out, so a lost answer or a stopped worker does not leave the user guessing.

Nothing runs the tracker here unless a test does: that is the worker being down.
"""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from portal.jobs import tracking
from portal.jobs.models import Job
from portal.slurm import gateway
from tests.api.conftest import ApiClient
from tests.jobs.test_tracking import SLEEPER, cycle_until, fresh_tracker, slurm_jobs, vision  # noqa: F401
from tests.jobs.test_tracking_outbox import CLOSED_PORT

pytestmark = pytest.mark.usefixtures("slurm_accounts", "fresh_tracker", "vision")

REQUESTED = "requested at"


@pytest.fixture
def held_job(alice, unique, slurm_jobs):  # noqa: F811
    """alice's held job, submitted through the API; (client, job JSON)."""
    client = ApiClient(alice)
    resp = client.post("/jobs", {"name": f"ctl-{unique}", "team": "vision", "script": SLEEPER, "hold": True,
                                 "time_limit_min": 5})
    assert resp.status_code == 201, resp.content
    slurm_jobs.append(resp.json()["slurm_job_id"])
    return client, resp.json()


def job_page(user, pk: int) -> str:
    web = Client()
    web.force_login(user)
    resp = web.get(reverse("jobs:detail", args=[pk]))
    assert resp.status_code == 200
    return resp.content.decode()


@pytest.mark.django_db
def test_a_cancel_shows_as_requested_until_the_tracker_sees_it_done(alice, held_job):
    client, job = held_job

    resp = client.post(f"/jobs/{job['id']}/cancel")

    assert resp.status_code == 200
    assert resp.json()["pending_action"] == "cancel" and resp.json()["pending_action_at"]
    assert gateway.get_job(job["slurm_job_id"]).state == "CANCELLED"  # Slurm did it; the row does not know yet
    assert client.get(f"/jobs/{job['id']}").json()["pending_action"] == "cancel"
    assert [r["pending_action"] for r in client.get("/jobs").json()["results"] if r["id"] == job["id"]] == ["cancel"]
    assert f"Cancel {REQUESTED}" in job_page(alice, job["id"])

    cycle_until(lambda: Job.objects.get(pk=job["id"]).state == "CANCELLED", what="the tracker to see the cancel")

    shown = client.get(f"/jobs/{job['id']}").json()
    assert (shown["state"], shown["pending_action"], shown["pending_action_at"]) == ("CANCELLED", "", None)
    assert REQUESTED not in job_page(alice, job["id"])


@pytest.mark.django_db
def test_a_release_is_marked_until_the_job_is_no_longer_held(alice, held_job):
    client, job = held_job
    tracking.track_jobs()
    assert Job.objects.get(pk=job["id"]).reason == "JobHeldUser"

    assert client.post(f"/jobs/{job['id']}/release").json()["pending_action"] == "release"
    assert f"Release {REQUESTED}" in job_page(alice, job["id"])

    cycle_until(lambda: Job.objects.get(pk=job["id"]).pending_action == "", what="the release to be confirmed")
    assert gateway.get_job(job["slurm_job_id"]).reason != "JobHeldUser"


@pytest.mark.django_db
def test_a_hold_of_a_job_already_held_is_confirmed_by_the_next_cycle(held_job):
    """Nothing changes in Slurm, yet the mark must not stay forever."""
    client, job = held_job
    tracking.track_jobs()

    assert client.post(f"/jobs/{job['id']}/hold").json()["pending_action"] == "hold"
    cycle_until(lambda: Job.objects.get(pk=job["id"]).pending_action == "", what="the hold to be confirmed")


@pytest.mark.django_db
def test_a_control_slurm_refuses_leaves_no_mark(held_job):
    client, job = held_job

    resp = client.post(f"/jobs/{job['id']}/requeue")  # Slurm: "Job is pending execution"

    assert resp.status_code == 409
    assert client.get(f"/jobs/{job['id']}").json()["pending_action"] == ""


@pytest.mark.django_db
def test_a_control_left_without_an_answer_stays_marked_until_slurm_confirms_one(settings, held_job):
    client, job = held_job
    # Slurm out of reach on both roads: slurmrestd (cancel on v0.0.38) and the commands
    # (scancel with the user's token from v0.0.40 on): a root that does not exist.
    unreachable = {**settings.SLURM, "REST_URL": CLOSED_PORT, "CLI_ROOT": "/nonexistent-slurm-root"}
    with override_settings(SLURM=unreachable):
        assert client.post(f"/jobs/{job['id']}/cancel").status_code == 503
    assert client.get(f"/jobs/{job['id']}").json()["pending_action"] == "cancel"  # it may or may not have happened

    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 200  # the user tries again, Slurm answers
    cycle_until(lambda: Job.objects.get(pk=job["id"]).state == "CANCELLED", what="the cancel to reach the row")
    assert client.get(f"/jobs/{job['id']}").json()["pending_action"] == ""
