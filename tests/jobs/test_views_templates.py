"""Job templates: members use them, leads and admins manage them; the seeded ones really run."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from portal.jobs.models import Job, JobTemplate
from portal.slurm import gateway
from tests.conftest import wait_until
from tests.jobs.views_support import VISION_LEAD, build_world, cancel_all, client_for
from tests.slurm.helpers import wait_state

pytestmark = pytest.mark.django_db

NEW = {"name": "fine-tune", "description": "LoRA on one GPU", "partition": "gpu", "nodes": 1, "gpus_per_node": 1,
       "gpu_type": "h100", "cpus_per_task": 8, "mem_mb": 16384, "time_limit_min": 60,
       "script": "#!/bin/bash\necho tune\n"}


@pytest.fixture
def world(make_user):
    people = build_world(make_user)
    people["vision_t"] = JobTemplate.objects.create(team=people["vision"], name="v-train", script="#!/bin/bash\n")
    people["nlp_t"] = JobTemplate.objects.create(team=people["nlp"], name="n-train", script="#!/bin/bash\n")
    return people


def test_members_see_their_teams_templates_without_edit_buttons(world):
    html = client_for(world["alice"]).get("/jobs/templates/").content.decode()
    assert "v-train" in html and "n-train" not in html
    assert f'href="/jobs/new/?template={world["vision_t"].pk}"' in html
    assert "/edit/" not in html and "New template" not in html


def test_a_lead_sees_edit_buttons_for_their_own_team_only(world):
    carol = client_for(world["carol"]).get("/jobs/templates/").content.decode()
    assert f'/jobs/templates/{world["nlp_t"].pk}/edit/' in carol and "v-train" not in carol
    admin = client_for(world["admin"]).get("/jobs/templates/").content.decode()
    assert f'/jobs/templates/{world["nlp_t"].pk}/edit/' in admin
    assert f'/jobs/templates/{world["vision_t"].pk}/edit/' in admin


def test_a_lead_creates_a_template_for_their_team(world):
    resp = client_for(world[VISION_LEAD]).post("/jobs/templates/new/", {**NEW, "team": world["vision"].pk})
    assert resp.status_code == 302
    template = JobTemplate.objects.get(name="fine-tune")
    assert (template.team, template.created_by, template.cpus_per_task) == (world["vision"], world[VISION_LEAD], 8)


def test_a_lead_cannot_create_one_for_another_team(world):
    resp = client_for(world[VISION_LEAD]).post("/jobs/templates/new/", {**NEW, "team": world["nlp"].pk})
    assert resp.status_code == 400 and b"Select a valid choice" in resp.content
    assert not JobTemplate.objects.filter(name="fine-tune").exists()


def test_a_lead_edits_and_deletes_their_teams_template(world):
    client, template = client_for(world["carol"]), world["nlp_t"]
    resp = client.post(f"/jobs/templates/{template.pk}/edit/", {**NEW, "name": "n-train-v2", "team": "ignored"})
    assert resp.status_code == 302
    template.refresh_from_db()
    assert (template.name, template.team) == ("n-train-v2", world["nlp"])  # the team cannot be changed
    assert client.post(f"/jobs/templates/{template.pk}/delete/").status_code == 302
    assert not JobTemplate.objects.filter(pk=template.pk).exists()


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_members_cannot_change_templates(world, who):
    client, template = client_for(world[who]), world["vision_t"]
    assert client.get("/jobs/templates/new/").status_code == 403
    assert client.get(f"/jobs/templates/{template.pk}/edit/").status_code == 403
    assert client.post(f"/jobs/templates/{template.pk}/edit/", NEW).status_code == 403
    assert client.post(f"/jobs/templates/{template.pk}/delete/").status_code == 403
    template.refresh_from_db()
    assert template.name == "v-train"


def test_another_teams_template_does_not_exist_for_you(world):
    client = client_for(world["carol"])
    assert client.get(f"/jobs/templates/{world['vision_t'].pk}/edit/").status_code == 404
    assert client.post(f"/jobs/templates/{world['vision_t'].pk}/delete/").status_code == 404
    assert JobTemplate.objects.filter(pk=world["vision_t"].pk).exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "v-train"}, "already exists"),
    ({"script": "echo no shebang"}, "interpreter line"),
    ({"name": ""}, "This field is required"),
    ({"nodes": "-1"}, "greater than or equal to 0"),
])
def test_bad_template_input_is_a_form_error(world, change, message):
    resp = client_for(world[VISION_LEAD]).post("/jobs/templates/new/", {**NEW, "team": world["vision"].pk, **change})
    assert resp.status_code == 400
    assert message in resp.content.decode()


def test_seeding_makes_three_templates_per_team_once(world, settings, tmp_path):
    settings.VAR_DIR = tmp_path  # keep the demo passwords file out of the checkout
    call_command("seed_demo", "--skip-slurm")
    JobTemplate.objects.filter(team__name="vision", name="CPU preprocessing").update(time_limit_min=5)
    call_command("seed_demo", "--skip-slurm")
    seeded = {"Training with checkpoints", "Single-GPU evaluation", "CPU preprocessing"}
    for team in ("vision", "nlp"):
        assert seeded <= set(JobTemplate.objects.filter(team__name=team).values_list("name", flat=True))
    assert JobTemplate.objects.filter(name__in=seeded).count() == 6
    # A lead's edit survives a second seeding.
    assert JobTemplate.objects.get(team__name="vision", name="CPU preprocessing").time_limit_min == 5


# ---------------------------------------------------------------- the seeded scripts run on the cluster

@pytest.fixture
def seeded(world, settings, tmp_path, slurm_accounts):
    settings.VAR_DIR = tmp_path
    call_command("seed_demo", "--skip-slurm")
    world["alice"].refresh_from_db()  # seeding gave her a new password, which ends old sessions
    made: list[tuple[str, int]] = []
    yield made
    cancel_all(made)


def _submit_template(client, name: str, made: list, **change) -> Job:
    template = JobTemplate.objects.get(team__name="vision", name=name)
    form = client.get("/jobs/new/", {"template": template.pk}).context["form"]
    data = {**{k: v for k, v in form.initial.items() if v is not None}, "requeue": "on", **change}
    key = re.search(r'name="idempotency_key" value="(\w+)"', client.get("/jobs/new/").content.decode()).group(1)
    resp = client.post("/jobs/new/", {**data, "idempotency_key": key})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    job = Job.objects.get(pk=int(resp["Location"].strip("/").split("/")[-1]))
    made.append(("alice", job.slurm_job_id))
    return job


def _output(job: Job) -> str:
    try:
        with open(job.stdout_path) as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


@pytest.mark.slow
def test_the_seeded_preprocessing_template_runs_to_completion(world, seeded):
    job = _submit_template(client_for(world["alice"]), "CPU preprocessing", seeded)
    assert wait_state(job.slurm_job_id, {"COMPLETED", "FAILED"}, timeout=60) == "COMPLETED"
    assert "done: 24 shards" in wait_until(lambda: _output(job), what="the job's output")


@pytest.mark.slow
def test_the_seeded_training_template_checkpoints_on_cancel_and_resumes(world, seeded):
    client = client_for(world["alice"])
    first = _submit_template(client, "Training with checkpoints", seeded)
    wait_until(lambda: "step 3/" in _output(first), timeout=60, what="three training steps")
    gateway.cancel_job("alice", first.slurm_job_id)  # Slurm sends SIGTERM first: the loop saves
    saved = wait_until(lambda: re.search(r"checkpoint saved at step (\d+)", _output(first)), timeout=30,
                       what="the checkpoint saved on SIGTERM")
    step = int(saved.group(1))

    second = _submit_template(client, "Training with checkpoints", seeded, checkpoint_dir=first.checkpoint_dir)
    assert wait_until(lambda: f"resumed from step {step}" in _output(second), timeout=60,
                      what="the second run to resume from the checkpoint")
