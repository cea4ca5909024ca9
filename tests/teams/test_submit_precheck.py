"""The submit pre-check: a job that would break a hard limit of its team now is refused with the
team's numbers (API 409, a form error), and nothing is written or sent to Slurm. Slurm still
enforces every limit; this only says so before the job waits for nothing."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from portal.api.services import issue_token
from portal.jobs.models import Job
from portal.quotas.limits import hours
from portal.quotas.usage import period_bounds
from portal.teams.models import TeamPolicy
from tests.jobs.views_support import SLEEPER, build_world, client_for, make_job

pytestmark = pytest.mark.django_db

JOB = {"name": "precheck", "team": "vision", "partition": "gpu", "nodes": 1, "gpus_per_node": 8,
       "gpu_type": "", "cpus_per_task": 1, "mem_mb": 0, "time_limit_min": 5, "script": SLEEPER}


@pytest.fixture
def world(make_user, slurm_accounts):
    return build_world(make_user)


def _api_submit(user, **changes) -> tuple[int, dict]:
    token, _ = issue_token(user=user, name="precheck")
    resp = Client().post("/api/v1/jobs", data=json.dumps({**JOB, **changes}), content_type="application/json",
                         headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.json()


def _nothing_sent(name: str) -> bool:
    queued = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return not Job.objects.filter(name=name).exists() and not queued


def _hold_gpus(world, count: int, gpu_type: str = "") -> None:
    # Rows as the tracker leaves running jobs: 4 GPUs a node.
    for _ in range(count // 4):
        make_job(world["bob"], world["vision"], gpus_per_node=4, gpu_type=gpu_type)


def test_a_job_past_the_teams_gpu_cap_is_refused_with_the_numbers(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus=32)
    _hold_gpus(world, 28)
    status, body = _api_submit(world["alice"], name="precheck-cap", nodes=2, gpus_per_node=4)
    assert status == 409
    assert body == {"detail": "Team vision uses 28 of 32 GPUs; this job asks for 8.", "limit": "max_gpus"}
    assert _nothing_sent("precheck-cap")


def test_only_gpus_held_now_count(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus=8)
    # A finished job and a waiting one hold no GPUs.
    make_job(world["bob"], world["vision"], gpus_per_node=4, state="COMPLETED", end_time=timezone.now())
    make_job(world["bob"], world["vision"], gpus_per_node=4, state="PENDING", start_time=None)
    _hold_gpus(world, 4)
    status, body = _api_submit(world["alice"], name="precheck-fits", gpus_per_node=4, hold=True)
    assert status == 201, body
    subprocess.run(["scancel", str(body["slurm_job_id"])], check=False)


def test_a_typed_request_is_checked_against_its_types_cap(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus_by_type={"h100": 8})
    _hold_gpus(world, 4, gpu_type="h100")
    _hold_gpus(world, 4)     # untyped: Slurm does not count these against the h100 cap either
    status, body = _api_submit(world["alice"], name="precheck-typed", nodes=2, gpus_per_node=4,
                               gpu_type="h100")
    assert status == 409
    assert body == {"detail": "Team vision uses 4 of 8 h100 GPUs; this job asks for 8.",
                    "limit": "max_gpus_by_type"}


def test_a_used_up_hard_budget_refuses_gpu_jobs_with_usage_and_reset(world):
    start, end = period_bounds("month", timezone.now())
    # A finished 8-GPU job that ran the first half of the period so far: a fixed number of GPU-hours.
    half = (timezone.now() - start) / 2
    make_job(world["bob"], world["vision"], nodes=2, gpus_per_node=4, state="COMPLETED", start_time=start,
             end_time=start + half)
    used = 8 * half.total_seconds() / 3600
    TeamPolicy.objects.create(team=world["vision"], gpu_hours_budget=round(used * 0.9, 1), over_budget="hard")
    status, body = _api_submit(world["alice"], name="precheck-budget", gpus_per_node=1)
    assert status == 409 and body["limit"] == "gpu_hours_budget"
    assert body["detail"] == (f"Team vision has used {hours(used)} of {round(used * 0.9, 1):g} GPU-hours this month "
                              f"(resets {end.strftime('%a %-d %b')} 00:00 UTC): the budget is used up, so new GPU "
                              "jobs are refused until it resets or an admin raises it.")
    assert _nothing_sent("precheck-budget")


def test_a_soft_budget_and_cpu_jobs_are_not_refused(world):
    TeamPolicy.objects.create(team=world["vision"], gpu_hours_budget=0.001, over_budget="hard", max_gpus=0)
    make_job(world["bob"], world["vision"], gpus_per_node=1, start_time=timezone.now() - timedelta(minutes=10))
    status, body = _api_submit(world["alice"], name="precheck-cpu", partition="cpu", gpus_per_node=0, hold=True)
    assert status == 201, body
    subprocess.run(["scancel", str(body["slurm_job_id"])], check=False)
    TeamPolicy.objects.filter(team=world["vision"]).update(over_budget="soft", max_gpus=None)
    status, body = _api_submit(world["alice"], name="precheck-soft", gpus_per_node=1, hold=True)
    assert status == 201, body
    subprocess.run(["scancel", str(body["slurm_job_id"])], check=False)


def test_the_form_shows_the_refusal_and_sends_nothing(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus=4)
    _hold_gpus(world, 4)
    form = {**JOB, "name": "precheck-form", "gpus_per_node": 1, "requeue": "on", "checkpoint_dir": ""}
    resp = client_for(world["alice"]).post("/jobs/new/", form)
    assert resp.status_code == 400     # the form's errors, as for any other refusal
    assert "Team vision uses 4 of 4 GPUs; this job asks for 1." in resp.content.decode()
    assert _nothing_sent("precheck-form")


def test_the_openapi_schema_documents_the_409(client):
    schema = client.get("/api/openapi.json").json()
    post = schema["paths"]["/api/v1/jobs"]["post"]
    assert "409" in post["responses"]
    assert "hard limit" in post["description"]
