"""A prolog failure: the node fails its start-up check, Slurm drains it and requeues the job
(nohold_on_prolog_fail) to wait ~120 s. The worker classifies it and starts it elsewhere now."""

from __future__ import annotations

import subprocess
import time

import pytest

from portal.recovery.models import Attempt, Cause, FailureClass
from tests.recovery.support import (
    ROOT,
    cycles_until,
    heal_and_resume,
    running_on,
    sacct_runs,
    sbatch,
    scontrol_show,
)

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("slurm_accounts", "fresh_cycles", "own_nodes", "celery_settled")]


def test_a_job_whose_prolog_fails_starts_on_another_node_at_once(bob, vision, slurm_jobs):
    # The fault lands between two health checks (every 3 s) and the job right after it, so the
    # prolog finds it first. If the health check wins the race the node is drained before the
    # job starts and no prolog runs: heal and try again, a few times.
    for _ in range(3):
        job_id = _job_started_on_a_faulty_gpu04(slurm_jobs)
        if job_id:
            break
    else:
        pytest.skip("the health check drained gpu04 before the job started, three times: no prolog ran")

    try:
        elsewhere = cycles_until(lambda: running_on(job_id, restarts=1), timeout=30, what="the job running again")
    except pytest.fail.Exception:
        pytest.fail(f"not running again: {_diagnose(job_id)}")

    assert elsewhere in ("gpu03", "gpu05")
    assert sacct_runs(job_id)[0] == ("REQUEUED", "gpu04")
    shown = scontrol_show(job_id)
    assert "gpu04" in shown["ExcNodeList"] and shown["ReqNodeList"] == "(null)"
    first = cycles_until(lambda: Attempt.objects.filter(job__slurm_job_id=job_id, number=0).exclude(outcome="").first(),
                         what="the first run recorded")
    assert (first.failure_class, first.cause, first.failed_node) == (FailureClass.INFRASTRUCTURE, Cause.PROLOG_FAIL,
                                                                     "gpu04")


def _job_started_on_a_faulty_gpu04(slurm_jobs: list[int]) -> int | None:
    subprocess.run([str(ROOT / "cluster/ctl"), "fault", "gpu04", "--xid", "79"], check=True, capture_output=True)
    job_id = sbatch("bob", "rq-prolog", "-w", "gpu04", "--gres=gpu:1")
    slurm_jobs.append(job_id)
    deadline = time.monotonic() + 15   # another test's job may hold gpu04: then try again
    while time.monotonic() < deadline:
        shown = scontrol_show(job_id)
        if shown["Restarts"] == "1":
            return job_id
        if "ReqNodeNotAvail" in shown["Reason"]:
            break
        time.sleep(0.25)
    subprocess.run(["scancel", str(job_id)], check=False)
    heal_and_resume("gpu04")
    return None


def _diagnose(job_id: int) -> str:
    from portal.jobs.models import Job  # noqa: PLC0415
    from portal.recovery.models import Recovery  # noqa: PLC0415

    shown = scontrol_show(job_id)
    rows = list(Job.objects.filter(slurm_job_id=job_id).values("state", "restart_count", "state_changed_at"))
    attempts = list(Attempt.objects.filter(job__slurm_job_id=job_id).values("number", "cause", "detail", "outcome"))
    recoveries = list(Recovery.objects.filter(job__slurm_job_id=job_id).values("result", "done_at"))
    return (f"Slurm: {shown['JobState']} {shown['Reason']} restarts {shown['Restarts']} "
            f"exc {shown['ExcNodeList']} req {shown['ReqNodeList']}; rows {rows}; attempts {attempts}; "
            f"recoveries {recoveries}; sacct {sacct_runs(job_id)}")
