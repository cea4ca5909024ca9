"""The portal's whole flow on another Slurm release (24.11, 26.05): the API, the tracker, the
health policy and the account sync, each read back from what that Slurm holds.

Runs against cluster/rootcluster.py's mini cluster (see tests/slurm/other_slurm.py); `make
test-versions` starts one per release. No Celery worker takes part: the test's worker would be
pointed at the host's cluster, so the tracker, the node policy and the reconciler run in-process,
exactly as their tasks call them.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import Client

from portal.api.services import issue_token
from portal.jobs import tracking
from portal.jobs.models import Job
from portal.nodes.models import Node
from portal.nodes.policy import apply_node_policy
from portal.nodes.services import sync_nodes
from portal.quotas.reconcile import reconcile_teams
from portal.slurm import gateway
from portal.teams.models import Membership, Team, TeamPolicy
from slurm_plugins.report import Envelope
from tests.conftest import wait_until
from tests.nodes.policy_support import xid
from tests.slurm.other_slurm import in_root, needs_other_slurm, node_state, other_slurm, scontrol_job  # noqa: F401
from tests.slurm_plugins.signed_reports import body, master_key, send  # noqa: F401

pytestmark = [needs_other_slurm, pytest.mark.django_db, pytest.mark.usefixtures("other_slurm")]

SHORT = "#!/bin/bash\necho \"ran as $(id -un)\"\n"
SLEEPER = "#!/bin/bash\nsleep 300\n"


@pytest.fixture
def alice(make_user):
    user = make_user("alice")
    Membership.objects.create(user=user, team=Team.objects.get_or_create(name="vision")[0])
    return user


@pytest.fixture
def api(alice):
    token, _ = issue_token(user=alice, name="flow")
    client, headers = Client(), {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str, data: dict | None = None):
        return getattr(client, method)(f"/api/v1{path}", data or {}, content_type="application/json", headers=headers)
    return call


@pytest.fixture
def cleanup():
    ids: list[int] = []
    yield ids
    for job_id in ids:
        in_root("scancel", str(job_id), check=False)


def submit(api, cleanup, script: str, **extra) -> dict:
    resp = api("post", "/jobs", {"name": f"flow-{uuid.uuid4().hex[:6]}", "team": "vision", "script": script,
                                 "time_limit_min": 5, **extra})
    assert resp.status_code == 201, resp.content
    data = resp.json()
    cleanup.append(data["slurm_job_id"])
    return data


def tracked(job_id: int, *states: str, timeout: float = 60) -> Job:
    """Run the tracker until the portal's row for Slurm job `job_id` is in one of `states`."""
    def settled():
        tracking.track_jobs()
        row = Job.objects.get(slurm_job_id=job_id)
        return row if row.state in states else None
    return wait_until(settled, timeout=timeout, interval=1, what=f"job {job_id} tracked to {states}")


def test_a_job_submitted_through_the_api_runs_as_alice_and_is_tracked_to_completed(api, cleanup):
    data = submit(api, cleanup, SHORT, gpus_per_node=1, gpu_type="h100")
    held = scontrol_job(data["slurm_job_id"])
    assert held["UserId"].startswith("alice(") and held["Account"] == "vision"
    assert (held["Comment"], held["TresPerNode"], held["TimeLimit"]) == \
        (f"portal:{data['uuid']}", "gres/gpu:h100:1", "00:05:00")
    row = tracked(data["slurm_job_id"], "COMPLETED", "FAILED")
    assert (row.state, row.exit_code) == ("COMPLETED", 0)
    assert in_root("sacct", "-n", "-X", "-P", "-j", str(row.slurm_job_id), "-o", "State,User").strip() == \
        "COMPLETED|alice"


def test_cancel_hold_release_and_requeue_through_the_api(api, cleanup):
    job = submit(api, cleanup, SLEEPER, hold=True)
    slurm_id = job["slurm_job_id"]
    assert scontrol_job(slurm_id)["Reason"] == "JobHeldUser"
    assert api("post", f"/jobs/{job['id']}/release").status_code == 200
    wait_until(lambda: scontrol_job(slurm_id)["JobState"] == "RUNNING", timeout=30, what="the released job to run")
    assert api("post", f"/jobs/{job['id']}/requeue").status_code == 200
    wait_until(lambda: scontrol_job(slurm_id)["Restarts"] == "1", timeout=30, what="Slurm to count the requeue")
    assert api("post", f"/jobs/{job['id']}/hold").status_code == 200
    wait_until(lambda: scontrol_job(slurm_id)["Reason"] == "JobHeldUser", timeout=30, what="the hold")
    assert api("post", f"/jobs/{job['id']}/cancel").status_code == 200
    wait_until(lambda: scontrol_job(slurm_id)["JobState"] == "CANCELLED", timeout=30, what="the cancel")
    assert tracked(slurm_id, "CANCELLED").restart_count == 1


def test_a_plain_sbatch_job_is_adopted_for_its_owner(alice, cleanup):
    name = f"flow-sb-{uuid.uuid4().hex[:6]}"
    out = in_root("sbatch", "--parsable", "--hold", "-A", "vision", "-J", name, "--gres=gpu:h100:2", "-c", "4",
                  "-t", "7", "-D", "/tmp", "--wrap", "sleep 60", user="alice")
    slurm_id = int(out.strip().split(";")[0])
    cleanup.append(slurm_id)
    row = tracked(slurm_id, "PENDING")
    assert row.adopted and row.owner == alice and row.team.name == "vision"
    assert (row.name, row.reason, row.gpus_per_node, row.gpu_type, row.cpus_per_task, row.time_limit_min) == \
        (name, "JobHeldUser", 2, "h100", 4, 7)


@pytest.mark.usefixtures("master_key")
def test_a_health_fault_drains_the_node_and_three_clean_checks_resume_it():
    sync_nodes()
    node = Node.objects.get(name="gpu02")
    start = time.time() - 60
    try:
        send_report("gpu02", [xid(79)], at=start)
        apply_node_policy(node.pk)
        state, reason = node_state("gpu02")
        assert state.startswith("drain") and reason.startswith("portal: xid: Xid 79 on GPU 0")
        for offset in (3, 6, 9):
            send_report("gpu02", [], at=start + offset)
        apply_node_policy(node.pk)
        assert not node_state("gpu02")[0].startswith("drain")
        # 24.11 pings a resumed node first: "idle*" (not responding) for a moment, then idle.
        wait_until(lambda: node_state("gpu02")[0] in ("idle", "mixed", "allocated"), timeout=30,
                   what="gpu02 back in service")
    finally:
        if node_state("gpu02")[0].startswith("drain"):
            gateway.resume_node("gpu02")


def send_report(node: str, findings: list[dict], *, at: float) -> None:
    # The real intake, signed as the node would; on_commit never fires in this test's transaction,
    # so no task goes to the broker (whose worker serves the host's cluster).
    resp = send(Envelope(body(node, findings=findings, sent_at=at)), node)
    assert resp.status_code == 202, resp.content


def test_the_account_sync_writes_teams_members_leads_and_limits(alice, make_user):
    name = f"v11-{uuid.uuid4().hex[:6]}"
    team = Team.objects.create(name=name)
    Membership.objects.create(user=alice, team=team, role=Membership.Role.LEAD)
    Membership.objects.create(user=make_user("bob"), team=team)
    TeamPolicy.objects.create(team=team, shares=30, max_gpus=4)
    try:
        plan = reconcile_teams()
        assert not plan.failed, plan.failed
        rows = in_root("sacctmgr", "-nP", "show", "assoc", f"account={name}", "format=user,fairshare,grptres")
        assert sorted(rows.split()) == sorted(["|30|gres/gpu=4", "alice|1|", "bob|1|"])
        coords = in_root("sacctmgr", "-nP", "show", "account", name, "withcoord", "format=account,coordinators")
        assert coords.strip() == f"{name}|alice"
        assert reconcile_teams(dry_run=True).empty
        team.delete()
        reconcile_teams()
        assert in_root("sacctmgr", "-nP", "show", "account", name).strip() == ""
    finally:
        in_root("sacctmgr", "-i", "remove", "user", "where", f"account={name}", check=False)
        in_root("sacctmgr", "-i", "remove", "account", name, check=False)
