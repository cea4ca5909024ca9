"""Cancel, hold, release and requeue from the job page, carried out in the real Slurm."""

from __future__ import annotations

import pytest

from portal.jobs.models import JobEvent
from portal.slurm import gateway
from portal.slurm.types import JobSpec
from tests.conftest import wait_until
from tests.jobs.views_support import VISION_LEAD, build_world, cancel_all, client_for, home, make_job, submit
from tests.slurm.helpers import wait_state

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def world(make_user, slurm_accounts):
    return build_world(make_user)


@pytest.fixture
def running(world):
    """Submit a sleeper as a user and wait until Slurm runs it; cancelled afterwards."""
    made: list[tuple[str, int]] = []

    def start(owner: str, team: str = "vision"):
        job = submit(world[owner], team=team)
        made.append((owner, job.slurm_job_id))
        wait_state(job.slurm_job_id, {"RUNNING"})
        job.state = "RUNNING"
        job.save(update_fields=["state"])
        return job
    yield start
    cancel_all(made)


def _post(user, job, action: str):
    return client_for(user).post(f"/jobs/{job.pk}/{action}/", follow=True)


def test_it_cancels_own_job(world, running):
    job = running("alice")
    resp = _post(world["alice"], job, "cancel")
    assert resp.status_code == 200
    assert b"Cancel sent to Slurm" in resp.content
    assert wait_state(job.slurm_job_id, {"CANCELLED"}) == "CANCELLED"
    event = JobEvent.objects.get(job=job, kind="action", name="cancel")
    assert event.ok and event.actor == world["alice"]
    assert b"cancel" in resp.content and b"badge ok" in resp.content  # in the audit trail


def test_a_teammate_cannot_cancel_and_gets_a_404(world, running):
    job = running("alice")
    resp = client_for(world["bob"]).post(f"/jobs/{job.pk}/cancel/")
    assert resp.status_code == 404
    assert gateway.get_job(job.slurm_job_id).state == "RUNNING"
    assert not JobEvent.objects.filter(job=job, kind="action", name="cancel").exists()


def test_a_team_lead_cancels_a_members_job(world, running):
    job = running("erin", team="nlp")
    page = client_for(world["carol"]).get(f"/jobs/{job.pk}/").content.decode()
    assert f'action="/jobs/{job.pk}/cancel/"' in page
    resp = _post(world["carol"], job, "cancel")
    assert b"Cancel sent to Slurm" in resp.content
    assert wait_state(job.slurm_job_id, {"CANCELLED"}) == "CANCELLED"


def test_an_admin_cancels_anyones_job(world, running):
    job = running("alice")
    _post(world["admin"], job, "cancel")
    assert wait_state(job.slurm_job_id, {"CANCELLED"}) == "CANCELLED"
    assert JobEvent.objects.get(job=job, name="cancel").actor == world["admin"]


def test_a_lead_slurm_will_not_act_for_gets_a_plain_message(world, running):
    # victor leads vision in the portal but has no account on the cluster.
    job = running("alice")
    resp = _post(world[VISION_LEAD], job, "cancel")
    assert resp.status_code == 200
    assert b"The portal cannot act for you in Slurm" in resp.content
    assert gateway.get_job(job.slurm_job_id).state == "RUNNING"
    assert JobEvent.objects.get(job=job, name="cancel").ok is False


def test_it_requeues_a_running_job(world, running):
    job = running("alice")
    page = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    assert f'action="/jobs/{job.pk}/requeue/"' in page and f'action="/jobs/{job.pk}/hold/"' not in page
    resp = _post(world["alice"], job, "requeue")
    assert b"Requeued" in resp.content
    assert wait_until(lambda: gateway.get_job(job.slurm_job_id).restarts >= 1, what="Slurm to restart the job")


def test_it_holds_a_waiting_job_and_releases_it(world):
    # Two whole-node jobs fill the cpu partition, so a third one waits and can be held.
    spec = JobSpec(name="ui-fill", account="vision", script="#!/bin/bash\nsleep 60\n", partition="cpu",
                   working_dir=str(home("alice")), stdout="/dev/null", cpus_per_task=32, time_limit_min=2)
    filler = [gateway.submit_job("alice", spec) for _ in range(2)]
    try:
        job = submit(world["alice"], partition="cpu", cpus_per_task=32)
        filler.append(job.slurm_job_id)
        wait_until(lambda: gateway.get_job(job.slurm_job_id).reason in {"Resources", "Priority"},
                   what="Slurm to queue the job behind the fillers")
        job.state, job.reason = "PENDING", "Resources"
        job.save(update_fields=["state", "reason"])
        assert f'action="/jobs/{job.pk}/hold/"'.encode() in client_for(world["alice"]).get(f"/jobs/{job.pk}/").content
        assert b"The job is held" in _post(world["alice"], job, "hold").content
        assert gateway.get_job(job.slurm_job_id).reason == "JobHeldUser"
        assert b"Released" in _post(world["alice"], job, "release").content
        assert gateway.get_job(job.slurm_job_id).reason != "JobHeldUser"
    finally:
        cancel_all([("alice", slurm_id) for slurm_id in filler])


def test_slurms_refusal_is_shown_in_its_own_words(world, running):
    # bob leads vision in the portal, but Slurm was never told (he is no coordinator there).
    world["bob"].memberships.update(role="lead")
    job = running("alice")
    resp = _post(world["bob"], job, "cancel")
    assert resp.status_code == 200
    assert b"Slurm refused" in resp.content and b"ermission denied" in resp.content
    assert gateway.get_job(job.slurm_job_id).state == "RUNNING"
    assert JobEvent.objects.get(job=job, name="cancel").ok is False


def test_unknown_actions_and_get_requests_are_refused(world):
    job = make_job(world["alice"], world["vision"])
    client = client_for(world["alice"])
    assert client.post(f"/jobs/{job.pk}/explode/").status_code == 404
    assert client.get(f"/jobs/{job.pk}/cancel/").status_code == 405
