"""The worker killed mid-requeue loses nothing: the outbox row is written before Slurm is asked,
and the next cycle reads Slurm again and does only what is left (never a second requeue)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.recovery.classify import infrastructure
from portal.recovery.models import Cause, Recovery
from portal.recovery.services import record_infrastructure_failure
from portal.slurm import gateway
from portal.slurm.parse import expand_hostlist
from tests.conftest import wait_until
from tests.recovery.support import cycles_until, recover, row, running_on, sbatch, scontrol_show

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("slurm_accounts", "fresh_cycles", "own_nodes", "celery_settled")]

VERDICT = infrastructure(Cause.FATAL_FINDING, "gpu04: xid: Xid 48 on GPU 0: double-bit ECC error", "gpu04")


def _adopted_job_on_gpu04(slurm_jobs):
    job_id = sbatch("bob", "rq-outbox", "-w", "gpu04", "--gres=gpu:1")
    slurm_jobs.append(job_id)
    cycles_until(lambda: running_on(job_id, restarts=0) == "gpu04" and row(job_id) and row(job_id).state == "RUNNING",
                 what="the sbatch job running on gpu04 and adopted")
    return row(job_id)


def _decide(job) -> Recovery:
    """What the worker writes before it talks to Slurm (then it 'dies')."""
    return record_infrastructure_failure(job, 0, VERDICT, started_at=job.start_time, nodes_list=job.nodes_list,
                                         gpus=1)


def test_an_outbox_row_whose_requeue_was_never_sent_is_finished_by_the_next_cycle(bob, vision, slurm_jobs):
    job = _adopted_job_on_gpu04(slurm_jobs)
    recovery = _decide(job)
    assert running_on(job.slurm_job_id, restarts=0) == "gpu04"    # nothing sent yet

    recover()

    recovery.refresh_from_db()
    assert recovery.done_at is not None
    assert "gpu04" in scontrol_show(job.slurm_job_id)["ExcNodeList"]
    wait_until(lambda: running_on(job.slurm_job_id, restarts=1) in ("gpu03", "gpu05"), timeout=20,
               what="run 1 on another node")


def test_a_worker_killed_after_the_requeue_leaves_the_placement_to_the_next_cycle(bob, vision, slurm_jobs):
    job = _adopted_job_on_gpu04(slurm_jobs)
    recovery = _decide(job)
    gateway.requeue_job_now(job.slurm_job_id)                      # sent; then the worker died,
    Recovery.objects.filter(pk=recovery.pk).update(claimed_until=timezone.now() + timedelta(seconds=90))
    wait_until(lambda: scontrol_show(job.slurm_job_id)["JobState"] == "PENDING", what="Slurm's requeue done")
    assert scontrol_show(job.slurm_job_id)["Reason"] == "BeginTime"  # Slurm alone would wait ~120 s

    recover()                                          # its claim still holds: hands off
    recovery.refresh_from_db()
    assert recovery.done_at is None
    assert "gpu04" not in expand_hostlist(scontrol_show(job.slurm_job_id)["ExcNodeList"])

    Recovery.objects.filter(pk=recovery.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    recover()                                          # the claim ran out: finished

    recovery.refresh_from_db()
    assert recovery.done_at is not None
    wait_until(lambda: running_on(job.slurm_job_id, restarts=1) in ("gpu03", "gpu05"), timeout=20,
               what="run 1 on another node")
    assert scontrol_show(job.slurm_job_id)["Restarts"] == "1"     # requeued once, not twice


def test_a_job_its_owner_cancelled_before_the_worker_acted_stays_cancelled(bob, vision, slurm_jobs):
    job = _adopted_job_on_gpu04(slurm_jobs)
    recovery = _decide(job)
    subprocess.run(["runuser", "-u", "bob", "--", "scancel", str(job.slurm_job_id)], check=True)
    wait_until(lambda: scontrol_show(job.slurm_job_id)["JobState"] == "CANCELLED", what="the job cancelled")

    recover()

    recovery.refresh_from_db()
    assert recovery.done_at is not None and "left alone" in recovery.result
    shown = scontrol_show(job.slurm_job_id)
    assert (shown["JobState"], shown["Restarts"]) == ("CANCELLED", "0")
