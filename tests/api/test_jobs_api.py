"""Submitting and reading jobs through /api/v1/jobs, against the live cluster."""

from __future__ import annotations

import subprocess
import threading

import pytest
from django.db import connection

from portal.jobs.models import Job, JobEvent
from portal.slurm import gateway
from portal.teams.models import Membership, Team
from tests.api.conftest import ApiClient
from tests.conftest import wait_until
from tests.slurm.helpers import spec_for, wait_state


def test_it_requires_a_token(client, world):
    resp = client.get("/api/v1/jobs")
    assert resp.status_code == 401
    assert "Bearer" in resp.json()["detail"]


def test_a_wrong_token_is_refused(client, world):
    resp = client.get("/api/v1/jobs", headers={"Authorization": "Bearer cpt_not-a-real-token"})
    assert resp.status_code == 401


def test_alice_submits_and_the_job_runs_as_alice(api, submitted):
    data = submitted("alice", name="whoami", script="#!/bin/bash\necho \"I am $(id -un)\"\n",
                     gpus_per_node=1, gpu_type="h100")
    assert data["state"] == "PENDING" and data["owner"] == "alice" and data["team"] == "vision"
    assert wait_state(data["slurm_job_id"], {"COMPLETED", "FAILED"}) == "COMPLETED"
    slurm_job = gateway.get_job(data["slurm_job_id"])
    assert slurm_job.user == "alice" and slurm_job.account == "vision"
    assert slurm_job.comment == f"portal:{data['uuid']}"
    out = wait_until(lambda: api["alice"].get(f"/jobs/{data['id']}/output", tail=5).json().get("text"),
                     what="output to appear")
    assert "I am alice" in out


def test_the_checkpoint_dir_is_per_team_user_and_job(api, submitted):
    data = submitted("alice")
    assert data["checkpoint_dir"].endswith(f"/vision/alice/{data['uuid']}")
    assert data["requeue"] is True   # requeue on infrastructure failure is on by default


def test_the_same_idempotency_key_makes_one_job(api, submitted, world):
    first = api["alice"].post("/jobs", {"name": "once", "team": "vision", "script": "#!/bin/bash\nsleep 60\n"},
                              headers={"Idempotency-Key": "click-1"})
    again = api["alice"].post("/jobs", {"name": "once", "team": "vision", "script": "#!/bin/bash\nsleep 60\n"},
                              headers={"Idempotency-Key": "click-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["slurm_job_id"] == again.json()["slurm_job_id"]
    gateway.cancel_job("alice", first.json()["slurm_job_id"])
    assert Job.objects.filter(owner=world["alice"], idempotency_key="click-1").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_double_click_racing_in_parallel_makes_one_slurm_job(slurm_accounts, make_user):
    alice = make_user("alice")
    Membership.objects.create(user=alice, team=Team.objects.create(name="vision"))
    clients = [ApiClient(alice) for _ in range(2)]
    results = []

    def click(c):
        results.append(c.post("/jobs", {"name": "race", "team": "vision", "script": "#!/bin/bash\nsleep 60\n"},
                              headers={"Idempotency-Key": "race-1"}))
        connection.close()
    threads = [threading.Thread(target=click, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 201]
    ids = {r.json()["slurm_job_id"] for r in results if r.json()["slurm_job_id"]}
    job = Job.objects.get(idempotency_key="race-1")
    gateway.cancel_job("alice", job.slurm_job_id)
    assert ids <= {job.slurm_job_id}
    assert len([j for j in gateway.list_jobs(users=["alice"]) if j.comment == f"portal:{job.uuid}"]) == 1


def test_each_bad_field_gets_its_own_message(api):
    resp = api["alice"].post("/jobs", {"name": "bad", "team": "nlp", "script": "echo no shebang",
                                       "gpus_per_node": 9, "time_limit_min": 99999, "gpu_type": "a100"})
    assert resp.status_code == 400
    errors = resp.json()["errors"]
    assert "not a member of team nlp" in errors["team"][0]
    assert "#!" in errors["script"][0]
    assert "at most 4 GPUs" in errors["gpus_per_node"][0]
    assert "at most 2880 minutes" in errors["time_limit_min"][0]
    assert "h100" in errors["gpu_type"][0]
    assert not Job.objects.exists()


def test_slurms_own_rejection_reaches_the_user(api, world):
    ghost = Team.objects.create(name="ghost")        # a team with no Slurm account behind it
    Membership.objects.create(user=world["alice"], team=ghost)
    resp = api["alice"].post("/jobs", {"name": "x", "team": "ghost", "script": "#!/bin/bash\ntrue\n"})
    assert resp.status_code == 409
    assert "Invalid account" in resp.json()["detail"]
    assert not Job.objects.filter(team=ghost).exists()    # nothing half-made is left behind


def test_a_user_without_a_unix_account_cannot_submit(api, member, world):
    member(world["charlie"], "vision")
    resp = api["charlie"].post("/jobs", {"name": "x", "team": "vision", "script": "#!/bin/bash\ntrue\n"})
    assert resp.status_code == 403
    assert "charlie" in resp.json()["detail"]
    assert not Job.objects.exists()


def test_show_returns_the_script_and_plain_words(api, submitted):
    data = submitted("alice", script="#!/bin/bash\n# <b>bold</b>\nsleep 60\n")
    resp = api["alice"].get(f"/jobs/{data['id']}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["script"].startswith("#!/bin/bash\n# <b>bold</b>")
    assert body["state_text"] == "Waiting"


def test_alice_cancels_her_job_and_it_is_audited(api, submitted):
    data = submitted("alice")
    resp = api["alice"].post(f"/jobs/{data['id']}/cancel")
    assert resp.status_code == 200
    assert wait_state(data["slurm_job_id"], {"CANCELLED"}) == "CANCELLED"
    event = JobEvent.objects.get(job_id=data["id"], kind="action", name="cancel")
    assert event.ok and event.actor.username == "alice"


@pytest.fixture
def one_gpu_busy(unique):
    """A running 1-GPU job, so a job asking for every GPU in the partition must wait."""
    job_id = gateway.submit_job("bob", spec_for("bob", unique, "#!/bin/bash\nsleep 300\n", gpus_per_node=1))
    wait_state(job_id, {"RUNNING"})
    yield job_id
    gateway.cancel_job("bob", job_id)


def every_usable_gpu() -> dict:
    """Every GPU on every GPU node in service now (other tests may have drained some): a job
    asking for this waits while one GPU is busy. Slurm refuses at once a node count it lacks."""
    out = subprocess.run(["sinfo", "-h", "-p", "gpu", "-N", "-o", "%N %t"], check=True, capture_output=True,
                         text=True).stdout
    usable = {line.split()[0] for line in out.splitlines() if line.split()[1] in {"idle", "mix", "alloc"}}
    return {"nodes": len(usable), "gpus_per_node": 4, "gpu_type": "h100"}


def test_hold_then_release(api, submitted, one_gpu_busy):
    data = submitted("alice", **every_usable_gpu())
    try:
        assert api["alice"].post(f"/jobs/{data['id']}/hold").status_code == 200
        assert gateway.get_job(data["slurm_job_id"]).reason == "JobHeldUser"
        assert api["alice"].post(f"/jobs/{data['id']}/release").status_code == 200
        assert gateway.get_job(data["slurm_job_id"]).reason != "JobHeldUser"
    finally:
        # Before one_gpu_busy ends: it would otherwise start on every node for a moment.
        gateway.cancel_job("alice", data["slurm_job_id"])


def test_requeue_restarts_a_running_job(api, submitted):
    data = submitted("alice")
    wait_state(data["slurm_job_id"], {"RUNNING"})
    assert api["alice"].post(f"/jobs/{data['id']}/requeue").status_code == 200
    assert gateway.get_job(data["slurm_job_id"]).restarts == 1


def test_slurm_still_enforces_when_the_portal_thinks_bob_is_a_lead(api, submitted, world):
    """bob is made lead of vision in the portal only; Slurm has no such coordinator, so it refuses."""
    Membership.objects.filter(user=world["bob"]).update(role=Membership.Role.LEAD)
    data = submitted("alice")
    resp = api["bob"].post(f"/jobs/{data['id']}/cancel")
    assert resp.status_code == 409
    assert "ermission denied" in resp.json()["detail"]
    event = JobEvent.objects.get(job_id=data["id"], kind="action", name="cancel")
    assert not event.ok and event.actor.username == "bob" and "ermission denied" in event.detail
    assert not gateway.get_job(data["slurm_job_id"]).finished


def test_a_team_lead_cancels_a_members_job(api, submitted):
    data = submitted("erin", team="nlp")
    assert api["carol"].post(f"/jobs/{data['id']}/cancel").status_code == 200
    assert wait_state(data["slurm_job_id"], {"CANCELLED"}) == "CANCELLED"


def test_an_admin_cancels_anyones_job(api, submitted):
    data = submitted("alice")
    assert api["admin"].post(f"/jobs/{data['id']}/cancel").status_code == 200
    assert wait_state(data["slurm_job_id"], {"CANCELLED"}) == "CANCELLED"


def test_output_follows_by_offset(api, submitted):
    # No requeue: a requeue (a node blip on a loaded machine) would restart the file from zero.
    data = submitted("alice", script="#!/bin/bash\necho one\nsleep 3\necho two\nsleep 60\n", requeue=False)
    url = f"/jobs/{data['id']}/output"
    first = wait_until(lambda: (r := api["alice"].get(url)).status_code == 200 and "one" in r.json()["text"]
                       and r.json(), what="first line")
    followed = {"text": first["text"], "offset": first["size"]}

    def follow() -> bool:
        chunk = api["alice"].get(url, offset=followed["offset"]).json()
        assert chunk["offset"] == followed["offset"]          # each chunk starts where the last ended
        followed["text"] += chunk["text"]
        followed["offset"] = chunk["size"]
        return "two" in followed["text"]
    wait_until(follow, timeout=60, what="second line")
    assert followed["text"] == "one\ntwo\n"                  # the chunks add up to the file, nothing twice


def test_missing_output_is_a_clear_404(api, submitted):
    data = submitted("alice", hold=True)   # never starts, so it never writes output
    resp = api["alice"].get(f"/jobs/{data['id']}/output", stream="stderr")
    assert resp.status_code == 404
    assert "does not exist yet" in resp.json()["detail"]


def test_a_job_can_be_submitted_held_and_released(api, submitted):
    data = submitted("alice", hold=True)
    assert gateway.get_job(data["slurm_job_id"]).reason == "JobHeldUser"
    assert api["alice"].post(f"/jobs/{data['id']}/release").status_code == 200
    assert gateway.get_job(data["slurm_job_id"]).reason != "JobHeldUser"
