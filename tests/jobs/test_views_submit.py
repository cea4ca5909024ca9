"""The submit form: templates, one job per form even on a double click, and every way it can say no."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import override_settings

from portal.jobs.models import Job, JobTemplate
from portal.slurm import gateway
from portal.teams.models import Membership, Team
from tests.jobs.views_support import SLEEPER, VISION_LEAD, build_world, cancel_all, client_for

pytestmark = pytest.mark.django_db

FORM = {"name": "ui-submit", "team": "vision", "partition": "gpu", "nodes": 1, "gpus_per_node": 1,
        "gpu_type": "h100", "cpus_per_task": 2, "mem_mb": 1024, "time_limit_min": 5, "requeue": "on",
        "checkpoint_dir": "", "script": SLEEPER}


@pytest.fixture
def world(make_user, slurm_accounts):
    return build_world(make_user)


@pytest.fixture
def submitted():
    """Every Slurm job a test makes through the form is cancelled afterwards."""
    made: list[tuple[str, int]] = []
    yield made
    cancel_all(made)


def _key(html: str) -> str:
    return re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', html).group(1)


def test_the_form_carries_a_fresh_one_time_key_and_the_teams_templates(world):
    JobTemplate.objects.create(team=world["vision"], name="vision-train", script="#!/bin/bash\n")
    JobTemplate.objects.create(team=world["nlp"], name="nlp-train", script="#!/bin/bash\n")
    client = client_for(world["alice"])
    first, second = client.get("/jobs/new/").content.decode(), client.get("/jobs/new/").content.decode()
    assert _key(first) != _key(second)
    assert "vision-train" in first and "nlp-train" not in first


def test_a_template_prefills_the_form_and_a_foreign_one_is_404(world):
    mine = JobTemplate.objects.create(team=world["vision"], name="eval", script="#!/bin/bash\necho eval\n",
                                      cpus_per_task=3, gpus_per_node=2, time_limit_min=17)
    theirs = JobTemplate.objects.create(team=world["nlp"], name="secret", script="#!/bin/bash\n")
    client = client_for(world["alice"])
    form = client.get("/jobs/new/", {"template": mine.pk}).context["form"]
    assert form.initial["script"] == "#!/bin/bash\necho eval\n"
    assert (form.initial["cpus_per_task"], form.initial["gpus_per_node"], form.initial["time_limit_min"]) == (3, 2, 17)
    assert client.get("/jobs/new/", {"template": theirs.pk}).status_code == 404
    assert client.get("/jobs/new/", {"template": "1 OR 1=1"}).status_code == 404


@pytest.mark.slow
def test_it_submits_to_slurm_as_the_user_and_opens_the_job(world, submitted):
    client = client_for(world["alice"])
    key = _key(client.get("/jobs/new/").content.decode())
    resp = client.post("/jobs/new/", {**FORM, "idempotency_key": key})
    job = Job.objects.get(owner=world["alice"])
    submitted.append(("alice", job.slurm_job_id))
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.pk}/"
    in_slurm = gateway.get_job(job.slurm_job_id)
    assert (in_slurm.user, in_slurm.account, in_slurm.name) == ("alice", "vision", "ui-submit")
    page = client.get(resp["Location"])
    assert f"Submitted: Slurm job {job.slurm_job_id}".encode() in page.content


@pytest.mark.slow
def test_a_double_click_makes_one_job(world, submitted):
    client = client_for(world["alice"])
    name = f"ui-double-{uuid.uuid4().hex[:6]}"   # other tests' ui-submit jobs may still be finishing
    data = {**FORM, "name": name, "idempotency_key": _key(client.get("/jobs/new/").content.decode())}
    first, second = client.post("/jobs/new/", data), client.post("/jobs/new/", data)
    job = Job.objects.get(owner=world["alice"])
    submitted.append(("alice", job.slurm_job_id))
    assert first["Location"] == second["Location"] == f"/jobs/{job.pk}/"
    assert b"already submitted" in client.get(second["Location"]).content
    assert len([j for j in gateway.list_jobs(users=["alice"]) if j.name == name]) == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("script", "echo no shebang", "interpreter line"),
    ("nodes", "0", "greater than or equal to 1"),
    ("gpus_per_node", "9", "at most 4 GPUs"),
    ("gpu_type", "a100", "offers GPU types: h100"),
    ("partition", "bigmem", "no partition named"),
    ("team", "nlp", "not a member of team nlp"),
    ("checkpoint_dir", "/etc/cron.d", "Checkpoints must live under"),
    ("time_limit_min", "many", "Enter a whole number"),
])
def test_bad_input_is_a_form_error_not_a_crash(world, field, value, message):
    resp = client_for(world["alice"]).post("/jobs/new/", {**FORM, field: value})
    assert resp.status_code == 400
    assert message in resp.content.decode()
    assert not Job.objects.exists()


def test_a_malformed_idempotency_key_is_a_400(world):
    resp = client_for(world["alice"]).post("/jobs/new/", {**FORM, "idempotency_key": "'; DROP TABLE"})
    assert resp.status_code == 400 and not Job.objects.exists()


@pytest.mark.slow
def test_slurms_rejection_is_shown_on_the_form(world):
    # A team the portal knows but Slurm does not: Slurm refuses the account.
    ghost = Team.objects.create(name="ghostteam")
    Membership.objects.create(user=world["alice"], team=ghost)
    resp = client_for(world["alice"]).post("/jobs/new/", {**FORM, "team": "ghostteam"})
    assert resp.status_code == 400
    assert "Slurm refused" in resp.content.decode() and "account" in resp.content.decode().lower()
    assert not Job.objects.exists()


def test_someone_slurm_will_not_act_for_is_told_so(world):
    resp = client_for(world[VISION_LEAD]).post("/jobs/new/", FORM)
    assert resp.status_code == 400
    assert b"The portal cannot act for you in Slurm" in resp.content
    assert not Job.objects.exists()


def test_someone_in_no_team_is_told_to_join_one(world):
    client = client_for(world["charlie"])
    for resp in (client.get("/jobs/new/"), client.post("/jobs/new/", FORM)):
        assert resp.status_code == 403
        assert b"You are not in a team yet" in resp.content
    assert not Job.objects.exists()


def test_the_form_says_when_slurm_is_not_answering(world, settings):
    unreachable = {**settings.SLURM, "REST_URL": "http://127.0.0.1:1", "TIMEOUT_S": 1.0}
    local_cache = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(SLURM=unreachable, CACHES=local_cache):
        resp = client_for(world["alice"]).get("/jobs/new/")
    assert resp.status_code == 503
    assert b"Slurm is not answering, try again" in resp.content
