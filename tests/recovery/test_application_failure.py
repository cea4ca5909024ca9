"""A job whose own script fails is the job's problem: recorded with its evidence, never requeued."""

from __future__ import annotations

import pytest

from portal.recovery.models import Attempt, Cause, FailureClass, Recovery
from tests.recovery.support import cycles_until, portal_job, sacct_runs, scontrol_show

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("slurm_accounts", "fresh_cycles", "own_nodes", "celery_settled")]

FAILING = "#!/bin/bash\necho step 1 done\necho 'loss is NaN' >&2\nsleep 1\nexit 3\n"


def test_a_script_that_exits_3_is_not_requeued_and_shows_why(bob, vision, slurm_jobs):
    job = portal_job(bob, "rq-exit3", FAILING)
    slurm_jobs.append(job.slurm_job_id)

    attempt = cycles_until(lambda: Attempt.objects.filter(job=job, number=0).exclude(outcome="").first(),
                           what="the failed run recorded")

    assert attempt.outcome == Attempt.Outcome.FAILED
    assert (attempt.failure_class, attempt.cause, attempt.exit_code) == (FailureClass.APPLICATION, Cause.EXIT_CODE, 3)
    assert "exit code 3" in attempt.detail
    assert "step 1 done" in attempt.evidence["stdout_tail"]
    assert "loss is NaN" in attempt.evidence["stderr_tail"]
    [(node, health)] = attempt.evidence["node_health"].items()
    assert node in ("gpu03", "gpu04", "gpu05") and health["healthy"] is True
    assert not Recovery.objects.filter(job=job).exists()
    job.refresh_from_db()
    assert (job.failure_class, job.failure_cause, job.auto_requeues) == ("application", "exit_code", 0)
    # Slurm holds one run that failed with 3, and no requeue.
    shown = scontrol_show(job.slurm_job_id)
    assert shown["JobState"] == "FAILED" and shown["Restarts"] == "0" and shown["ExitCode"] == "3:0"
    assert [state for state, _ in sacct_runs(job.slurm_job_id)] == ["FAILED"]
