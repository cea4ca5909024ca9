"""End to end on the real cluster: a policy set through the API reaches Slurm through the worker
within 10 s, and Slurm then holds a team at its GPU cap, for sbatch and portal jobs alike."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.test import Client

from portal.api.services import issue_token
from portal.quotas.reconcile import reconcile_teams
from portal.slurm import gateway
from portal.slurm.types import JobSpec
from portal.teams.models import TeamPolicy
from tests.conftest import wait_until
from tests.teams.conftest import account_row

pytestmark = [pytest.mark.slow]


@pytest.mark.django_db(transaction=True)
def test_a_policy_change_reaches_slurm_within_10_seconds(qt_team, admin_user, celery_settled):
    reconcile_teams()
    token, _ = issue_token(user=admin_user, name="test")
    resp = Client().put(f"/api/v1/teams/{qt_team.name}/policy", data=json.dumps({"shares": 30, "max_gpus": 2}),
                        content_type="application/json", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.content
    wait_until(lambda: account_row(qt_team.name) == {"fairshare": "30", "grptres": {"gres/gpu": "2"}},
               timeout=10, interval=0.5, what="the policy in sacctmgr")


def _squeue(job_id: int) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T|%r"], capture_output=True, text=True,
                         check=False).stdout.strip()
    state, _, reason = out.partition("|")
    return state, reason


def _sbatch_as_alice(account: str, name: str, *, partition: str = "gpu", gres: str = "gpu:1") -> int:
    args = ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-A", account, "-J", name, "-p", partition,
            "-t", "1", "-o", "/dev/null", "--chdir", "/tmp", "--wrap", "sleep 40"]
    if gres:
        args.insert(-2, f"--gres={gres}")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return int(out.strip().split(";")[0])


@pytest.mark.django_db
def test_a_team_at_its_gpu_cap_never_exceeds_it(qt_team):
    TeamPolicy.objects.create(team=qt_team, max_gpus=1)
    reconcile_teams()
    jobs: list[int] = []
    try:
        jobs.append(_sbatch_as_alice(qt_team.name, "qt-cap-sbatch"))
        wait_until(lambda: _squeue(jobs[0])[0] == "RUNNING", timeout=30, what="the first job to start")
        jobs.append(gateway.submit_job("alice", JobSpec(
            name="qt-cap-portal", account=qt_team.name, script="#!/bin/bash\nsleep 40\n", working_dir="/tmp",
            partition="gpu", gpus_per_node=1, time_limit_min=1, stdout="/dev/null")))
        jobs.append(_sbatch_as_alice(qt_team.name, "qt-cap-sbatch2"))
        for job_id in jobs[1:]:
            wait_until(lambda job_id=job_id: _squeue(job_id) == ("PENDING", "AssocGrpGRES"), timeout=15,
                       what=f"job {job_id} to wait with AssocGrpGRES")
        assert _squeue(jobs[0])[0] == "RUNNING"   # the cap held while GPUs stood idle elsewhere
    finally:
        for job_id in jobs:
            subprocess.run(["scancel", str(job_id)], check=False)


@pytest.mark.django_db
def test_a_deleted_team_with_a_running_job_keeps_its_account_until_the_job_ends(qt_team):
    reconcile_teams()
    job_id = _sbatch_as_alice(qt_team.name, "qt-busy", partition="cpu", gres="")
    try:
        wait_until(lambda: _squeue(job_id)[0] == "RUNNING", timeout=30, what="the job to start")
        name = qt_team.name
        qt_team.delete()
        plan = reconcile_teams()
        assert [(str(change), bool(message)) for change, message in plan.failed] == [
            (f"remove account {name} (team deleted)", True)]
        assert account_row(name) is not None
    finally:
        subprocess.run(["scancel", str(job_id)], check=False)
    wait_until(lambda: _squeue(job_id)[0] == "", timeout=30, what="the job to leave the queue")
    wait_until(lambda: not reconcile_teams().failed, timeout=30, interval=2, what="the account's removal")
    assert account_row(name) is None


@pytest.mark.django_db
def test_a_type_cap_binds_jobs_that_name_no_type(qt_team):
    # Slurm checks GrpTRES=gres/gpu:h100 only for jobs asking for h100 by name; the reconciler
    # also caps gres/gpu, since h100 is every GPU this cluster has.
    TeamPolicy.objects.create(team=qt_team, max_gpus_by_type={"h100": 1})
    reconcile_teams()
    job_id = _sbatch_as_alice(qt_team.name, "qt-untyped", gres="gpu:2")
    try:
        wait_until(lambda: _squeue(job_id) == ("PENDING", "AssocGrpGRES"), timeout=15,
                   what="the untyped 2-GPU job to wait with AssocGrpGRES")
    finally:
        subprocess.run(["scancel", str(job_id)], check=False)
