"""slurmdbd lags slurmctld: for a moment after Slurm requeued a run on a failed node, sacct can
still show that run RUNNING with no end (recorded in a clean-clone run: the cycle then called
it "requeued outside the portal" and left the job to Slurm's ~120 s wait). The cycle waits for
the run's real ending instead. Real rows; the sacct records are shaped as sacct printed them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.recovery import cycle
from portal.recovery.models import Attempt, Cause, Recovery
from portal.slurm.types import RunRecord
from portal.teams.models import Team
from tests.jobs.views_support import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def requeued(alice):
    """A job whose run 0 Slurm requeued just now: pending again, restart count 1."""
    return make_job(alice, Team.objects.create(name="vision"), slurm_job_id=990101, state="PENDING",
                    restart_count=1, state_changed_at=timezone.now(), nodes_list="gpu04")


def sacct_run(state: str, *, ended: bool, started) -> RunRecord:
    return RunRecord(job_id=990101, index=0, state=state, exit_code=0, signal=None, nodes="gpu04",
                     start_time=started, end_time=started + timedelta(seconds=2) if ended else None,
                     elapsed_s=2, gpus=1)


def settle(job, runs, now):
    mine = {a.number: a for a in Attempt.objects.filter(job=job)}
    return cycle._settle_requeued_runs(job, mine, runs, now, cycle.RecoverResult())


def test_a_run_sacct_still_shows_running_is_waited_for_not_called_a_quiet_requeue(requeued):
    started = timezone.now() - timedelta(seconds=3)
    Attempt.objects.create(job=requeued, number=0, started_at=started, gpus=1, nodes_list="gpu04")

    assert settle(requeued, [sacct_run("RUNNING", ended=False, started=started)], timezone.now()) is False
    assert Attempt.objects.get(job=requeued, number=0).outcome == ""     # nothing decided yet

    # One cycle later slurmdbd has it: the node failure is recorded and the job moved.
    assert settle(requeued, [sacct_run("NODE_FAIL", ended=True, started=started)], timezone.now()) is True
    first = Attempt.objects.get(job=requeued, number=0)
    assert (first.outcome, first.cause, first.failed_node) == (Attempt.Outcome.REQUEUED, Cause.NODE_FAIL, "gpu04")
    assert Recovery.objects.get(attempt=first).exclude_nodes.split(",")[:1] == ["gpu04"]


def test_after_the_patience_a_run_still_shown_running_is_settled_anyway(requeued):
    started = timezone.now() - timedelta(seconds=60)
    Attempt.objects.create(job=requeued, number=0, started_at=started, gpus=1, nodes_list="gpu04")
    later = requeued.state_changed_at + cycle.SACCT_PATIENCE + timedelta(seconds=1)

    assert settle(requeued, [sacct_run("RUNNING", ended=False, started=started)], later) is True
    # Settled (no longer waited for); with gpu04 in service it is not blamed on the node.
    first = Attempt.objects.get(job=requeued, number=0)
    assert first.outcome == Attempt.Outcome.REQUEUED and first.ended_at is not None


def test_a_run_sacct_shows_requeued_is_settled_at_once(requeued):
    """REQUEUED is how a run ended by a requeue stays in sacct (a failed prolog, a person): final."""
    started = timezone.now() - timedelta(seconds=3)
    Attempt.objects.create(job=requeued, number=0, started_at=started, gpus=1, nodes_list="gpu04")

    assert settle(requeued, [sacct_run("REQUEUED", ended=True, started=started)], timezone.now()) is True
    assert Attempt.objects.get(job=requeued, number=0).outcome == Attempt.Outcome.REQUEUED
