"""Crash-loop protection: a cap on automatic requeues, and a job that fails the same way on
several nodes is held as its own problem (and does not count against those nodes)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.jobs.models import Job
from portal.nodes.policy import Thresholds, lemon_reason, load_evidence
from portal.nodes.services import sync_nodes
from portal.recovery.models import Attempt, Cause, FailureClass
from portal.recovery.services import evacuate_node
from portal.teams.models import Team
from tests.conftest import wait_until
from tests.recovery.support import row, running_on, sbatch, scontrol_show

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("slurm_accounts", "fresh_cycles", "own_nodes", "celery_settled")]

XID79 = "xid: Xid 79 on GPU 0: GPU has fallen off the bus"


@pytest.fixture
def quick_requeues(settings):
    settings.PORTAL_REQUEUE_BACKOFF_S = [0]
    return settings


def _first_run_on(node: str, user: str = "bob") -> int:
    job_id = sbatch(user, "rq-loop", "-w", node, "--gres=gpu:1")
    wait_until(lambda: running_on(job_id, restarts=0) == node, what=f"the job running on {node}")
    return job_id


def test_after_the_cap_the_job_is_held_in_slurm_with_the_reason(bob, vision, slurm_jobs, quick_requeues):
    quick_requeues.PORTAL_MAX_AUTO_REQUEUES = 1
    job_id = _first_run_on("gpu04")
    slurm_jobs.append(job_id)

    assert evacuate_node("gpu04", cause=Cause.HUNG_NODE, detail="no report for 20 s") == [job_id]
    second = wait_until(lambda: running_on(job_id, restarts=1), timeout=20, what="run 1 on another node")
    assert second in ("gpu03", "gpu05")
    assert evacuate_node(second, cause=Cause.FATAL_FINDING, detail="xid: Xid 48 on GPU 0: double-bit ECC error") \
        == [job_id]

    shown = wait_until(lambda: (s := scontrol_show(job_id))["JobState"] == "PENDING" and s, what="the job pending")
    assert shown["Priority"] == "0" and shown["Reason"] in ("JobHeldUser", "job_requeued_in_held_state")
    assert shown["Restarts"] == "2"
    assert shown["AdminComment"].startswith("portal: held after 1 automatic requeues in a row without progress")
    job = row(job_id)
    assert job.auto_requeues == 1
    assert list(job.attempts.values_list("outcome", flat=True)) == [Attempt.Outcome.REQUEUED, Attempt.Outcome.HELD]
    assert job.attempts.get(number=1).failure_class == FailureClass.INFRASTRUCTURE
    # The email tells the owner to release it once the cause is fixed: Slurm must let them.
    subprocess.run(["runuser", "-u", "bob", "--", "scontrol", "release", str(job_id)], check=True,
                   capture_output=True)
    assert scontrol_show(job_id)["Priority"] != "0"


def test_the_same_fault_on_two_nodes_is_the_jobs_own_problem(bob, vision, slurm_jobs, quick_requeues):
    job_id = _first_run_on("gpu04")
    slurm_jobs.append(job_id)

    evacuate_node("gpu04", cause=Cause.FATAL_FINDING, detail=XID79)
    second = wait_until(lambda: running_on(job_id, restarts=1), timeout=20, what="run 1 on another node")
    evacuate_node(second, cause=Cause.FATAL_FINDING, detail=XID79)

    shown = wait_until(lambda: (s := scontrol_show(job_id))["JobState"] == "PENDING" and s, what="the job pending")
    assert shown["Priority"] == "0"
    assert "failed the same way" in shown["AdminComment"]
    assert ", ".join(sorted(["gpu04", second])) in shown["AdminComment"]
    job = row(job_id)
    second = job.attempts.get(number=1)
    assert (second.outcome, second.failure_class, second.cause) == (Attempt.Outcome.HELD, FailureClass.APPLICATION,
                                                                    Cause.FATAL_FINDING)
    assert (job.failure_class, job.auto_requeues) == ("application", 1)   # no second automatic requeue


def test_a_crash_looping_job_does_not_make_a_healthy_node_a_lemon(alice, bob, vision):
    """The lemon rule counts failed jobs of two users on a node; a crash loop is not one of them."""
    sync_nodes()
    team, now = Team.objects.get(name="vision"), timezone.now()
    for owner, cls, cause in ((alice, "application", "fatal_finding"), (bob, "", "")):
        Job.objects.create(owner=owner, team=team, name="lemon", state="FAILED", nodes_list="gpu04",
                           end_time=now - timedelta(minutes=1), failure_class=cls, failure_cause=cause)
    t = Thresholds(failed_jobs=2)
    [gpu04] = [e for e in load_evidence(None, t) if e.name == "gpu04"]
    assert gpu04.failed_jobs == 1 and lemon_reason(gpu04, t) == ""
    Job.objects.filter(owner=alice).update(failure_class="", failure_cause="")
    [gpu04] = [e for e in load_evidence(None, t) if e.name == "gpu04"]
    assert gpu04.failed_jobs == 2 and lemon_reason(gpu04, t).startswith("lemon: 2 jobs of 2 users")


def test_the_lemon_rule_spells_the_infrastructure_causes_as_recovery_does():
    from portal.nodes.policy import CRASH_LOOP_CAUSES  # noqa: PLC0415
    from portal.recovery.models import INFRASTRUCTURE_CAUSES  # noqa: PLC0415

    assert set(CRASH_LOOP_CAUSES) == {str(c) for c in INFRASTRUCTURE_CAUSES}


def test_the_node_side_names_the_causes_it_moves_jobs_for_as_recovery_does():
    from portal.nodes import evacuation  # noqa: PLC0415
    from portal.recovery.services import evacuate_node  # noqa: PLC0415

    assert (evacuation.FATAL_FINDING, evacuation.HUNG_NODE) == (Cause.FATAL_FINDING, Cause.HUNG_NODE)
    assert evacuation._handler == [evacuate_node]   # registered when Django started
