"""The crash-loop cap counts automatic requeues in a row that bought no progress, not every
requeue of a job's life: a long job meets many real faults and must survive each one it made
progress before. Decisions on real rows (no Slurm call is made before the outbox is written)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from portal.jobs.models import Job
from portal.recovery.classify import infrastructure
from portal.recovery.models import Attempt, Cause, FailureClass
from portal.recovery.services import record_infrastructure_failure, requeues_in_a_row
from portal.teams.models import Team
from tests.jobs.views_support import make_job

pytestmark = pytest.mark.django_db

CKPT = "/srv/portal/checkpoints/vision/alice/run/checkpoint.json"


@pytest.fixture
def job(alice):
    return make_job(alice, Team.objects.create(name="vision"), slurm_job_id=990001, state="PENDING",
                    gpus_per_node=4, checkpoint_dir="")


def run(job, number: int, start, minutes: float, *, checkpoint_at=None, outcome=Attempt.Outcome.REQUEUED,
        resumed_from: str = "") -> Attempt:
    """A closed run: requeued by the portal after a node fault unless told otherwise."""
    if outcome == Attempt.Outcome.REQUEUED:   # as record_infrastructure_failure counts them
        Job.objects.filter(pk=job.pk).update(auto_requeues=F("auto_requeues") + 1)
    return Attempt.objects.create(
        job=job, number=number, started_at=start, ended_at=start + timedelta(minutes=minutes), gpus=4,
        nodes_list=f"gpu0{number + 1}", outcome=outcome, failure_class=FailureClass.INFRASTRUCTURE,
        cause=Cause.FATAL_FINDING, failed_node=f"gpu0{number + 1}", resumed_from=resumed_from,
        last_checkpoint=CKPT if checkpoint_at else "", last_checkpoint_at=checkpoint_at,
        evidence={"signature": f"fatal_finding:{40 + number}"})   # a different fault each time


def fail_now(job, number: int, start, *, checkpoint_at=None, resumed_from: str = ""):
    """Run `number` (still open) fails now on its node; the portal decides."""
    job.refresh_from_db()
    Attempt.objects.create(job=job, number=number, started_at=start, gpus=4, nodes_list=f"gpu0{number + 1}",
                           resumed_from=resumed_from, last_checkpoint=CKPT if checkpoint_at else "",
                           last_checkpoint_at=checkpoint_at)
    verdict = infrastructure(Cause.FATAL_FINDING, f"gpu0{number + 1}: xid: Xid {60 + number} on GPU 0",
                             f"gpu0{number + 1}")
    recovery = record_infrastructure_failure(job, number, verdict, started_at=start, nodes_list=f"gpu0{number + 1}",
                                             gpus=4)
    return Attempt.objects.get(job=job, number=number), recovery


def test_three_requeues_without_progress_then_the_fourth_failure_holds(job):
    t0 = timezone.now() - timedelta(minutes=7)
    for n in range(3):   # each run died within a minute of its start, with no new checkpoint
        run(job, n, t0 + timedelta(minutes=2 * n), 1)

    attempt, recovery = fail_now(job, 3, t0 + timedelta(minutes=6))

    assert attempt.outcome == Attempt.Outcome.HELD
    assert "3 automatic requeues in a row without progress" in attempt.evidence["note"]
    assert recovery.not_before is None


def test_a_run_that_saved_a_newer_checkpoint_starts_the_count_again(job):
    t0 = timezone.now() - timedelta(minutes=80)
    run(job, 0, t0, 30, checkpoint_at=t0 + timedelta(minutes=25))                 # progress
    run(job, 1, t0 + timedelta(minutes=31), 40, checkpoint_at=t0 + timedelta(minutes=65),
        resumed_from=CKPT)                                                          # progress
    run(job, 2, t0 + timedelta(minutes=72), 1, checkpoint_at=t0 + timedelta(minutes=65),
        resumed_from=CKPT)                                                          # none

    attempt, recovery = fail_now(job, 3, t0 + timedelta(minutes=75), checkpoint_at=t0 + timedelta(minutes=65),
                                 resumed_from=CKPT)

    # Runs 2 and 3 bought nothing; the requeue after run 1 (which made progress) counts too.
    assert requeues_in_a_row(job, attempt) == 2
    assert attempt.outcome == Attempt.Outcome.REQUEUED
    assert recovery.not_before is not None    # the backoff's 3rd step (120 s), not an immediate start


def test_a_failed_run_that_made_progress_is_restarted_at_once_however_many_came_before(job):
    t0 = timezone.now() - timedelta(hours=10)
    for n in range(5):   # five earlier faults, each survived with new checkpoints
        run(job, n, t0 + timedelta(minutes=60 * n), 50, checkpoint_at=t0 + timedelta(minutes=60 * n + 45))

    attempt, recovery = fail_now(job, 5, t0 + timedelta(minutes=300), resumed_from=CKPT,
                                 checkpoint_at=t0 + timedelta(minutes=330))

    assert requeues_in_a_row(job, attempt) == 0
    assert attempt.outcome == Attempt.Outcome.REQUEUED and recovery.not_before is None


def test_a_long_run_without_checkpoints_counts_as_progress(job, settings):
    settings.PORTAL_CRASH_LOOP_PROGRESS_S = 1800
    t0 = timezone.now() - timedelta(hours=5)
    for n in range(3):
        run(job, n, t0 + timedelta(minutes=61 * n), 60)   # an hour each, never a checkpoint

    attempt, _ = fail_now(job, 3, t0 + timedelta(minutes=200))   # still running: an hour so far

    assert attempt.outcome == Attempt.Outcome.REQUEUED


def test_the_same_fault_on_another_node_long_ago_is_not_a_crash_loop(job, settings):
    settings.PORTAL_CRASH_LOOP_WINDOW_S = 3600
    t0 = timezone.now() - timedelta(hours=5)
    old = run(job, 0, t0, 60, checkpoint_at=t0 + timedelta(minutes=50))
    old.evidence = {"signature": "fatal_finding:79"}
    old.save()
    start = t0 + timedelta(minutes=70)
    Attempt.objects.create(job=job, number=1, started_at=start, gpus=4, nodes_list="gpu05")
    verdict = infrastructure(Cause.FATAL_FINDING, "gpu05: xid: Xid 79 on GPU 2", "gpu05")

    record_infrastructure_failure(job, 1, verdict, started_at=start, nodes_list="gpu05", gpus=4)

    attempt = Attempt.objects.get(job=job, number=1)
    assert (attempt.outcome, attempt.failure_class) == (Attempt.Outcome.REQUEUED, FailureClass.INFRASTRUCTURE)
    # ...but within the window the same two faults are the job's own problem.
    settings.PORTAL_CRASH_LOOP_WINDOW_S = 6 * 3600
    Attempt.objects.filter(job=job, number=1).delete()
    Attempt.objects.create(job=job, number=1, started_at=start, gpus=4, nodes_list="gpu05")
    record_infrastructure_failure(job, 1, verdict, started_at=start, nodes_list="gpu05", gpus=4)
    attempt = Attempt.objects.get(job=job, number=1)
    assert (attempt.outcome, attempt.failure_class) == (Attempt.Outcome.HELD, FailureClass.APPLICATION)
