"""A node that fails under a job (Slurm: NODE_FAIL): the worker restarts it elsewhere within
seconds instead of the ~120 s Slurm waits, and records why."""

from __future__ import annotations

import subprocess
import time

import pytest

from portal.recovery.models import Attempt, Cause, FailureClass, Recovery
from tests.conftest import wait_until
from tests.recovery.support import cycles_until, portal_job, row, running_on, sacct_runs, scontrol_show
from tests.slurm.helpers import home

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("slurm_accounts", "fresh_cycles", "own_nodes", "celery_settled")]


def test_a_job_whose_node_fails_runs_again_elsewhere_within_seconds(bob, vision, slurm_jobs):
    job = portal_job(bob, "rq-nodefail", node="gpu04")
    slurm_jobs.append(job.slurm_job_id)
    cycles_until(lambda: running_on(job.slurm_job_id, restarts=0) == "gpu04", what="the job running on gpu04")
    cycles_until(lambda: Attempt.objects.filter(job=job, number=0).exists(), what="attempt 0 recorded")
    time.sleep(2)  # some work to lose

    subprocess.run(["scontrol", "update", "nodename=gpu04", "state=down", "reason=rq-test node failure"],
                   check=True)
    failed_at = time.monotonic()
    # Slurm alone holds the requeued job ~121 s (BeginTime). On a loaded machine slurmctld, the
    # tracker and sacct can each lag by seconds, so the bound here only proves the portal lifted
    # that wait; bench/requeue.py measures the speed (p95 6.9 s).
    elsewhere = cycles_until(lambda: running_on(job.slurm_job_id, restarts=1), what="the job running again",
                             timeout=100)
    took = time.monotonic() - failed_at

    assert elsewhere in ("gpu03", "gpu05")
    assert took < 90, f"restarted after {took:.0f} s; Slurm alone waits about 120 s"
    print(f"\nnode DOWN to running elsewhere: {took:.1f} s")
    shown = scontrol_show(job.slurm_job_id)
    assert "gpu04" in shown["ExcNodeList"]
    assert shown["ReqNodeList"] == "(null)"       # the pin on the dead node was dropped
    assert [state for state, _ in sacct_runs(job.slurm_job_id)][:1] == ["NODE_FAIL"]
    assert row(job.slurm_job_id).pk == job.pk      # same job, same Slurm id

    first = Attempt.objects.get(job=job, number=0)
    assert (first.failure_class, first.cause, first.failed_node) == (FailureClass.INFRASTRUCTURE, Cause.NODE_FAIL,
                                                                     "gpu04")
    assert first.outcome == Attempt.Outcome.REQUEUED
    assert first.started_at and first.ended_at and first.gpus == 1 and first.nodes_list == "gpu04"
    assert first.lost_gpu_s is not None and first.lost_gpu_s > 0
    recovery = Recovery.objects.get(attempt=first)
    assert recovery.done_at is not None and "gpu04" in recovery.exclude_nodes
    cycles_until(lambda: Attempt.objects.filter(job=job, number=1).exists(), what="attempt 1 recorded")
    second = Attempt.objects.get(job=job, number=1)
    assert second.nodes_list == elsewhere and not second.outcome
    job.refresh_from_db()
    assert (job.failure_class, job.failure_cause, job.auto_requeues) == ("infrastructure", "node_fail", 1)
    out = home("bob") / f"slurm-{job.slurm_job_id}.out"
    wait_until(lambda: f"started run 1 on {elsewhere}" in out.read_text(), timeout=15, what="run 1's output")
