"""A fatal GPU fault on a node that runs jobs: the worker moves them at once (not when Slurm
notices), sbatch jobs included, away from the node and from every node with an open fatal
finding, even one the drain cap left in service."""

from __future__ import annotations

import subprocess

import pytest

from portal.nodes.services import sync_nodes
from portal.recovery.models import Attempt, Cause, FailureClass, Recovery
from portal.recovery.services import evacuate_node
from tests.conftest import wait_until
from tests.nodes.policy_support import report, xid
from tests.recovery.support import ROOT, cycles_until, row, running_on, sbatch, scontrol_show

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("slurm_accounts", "fresh_cycles", "own_nodes", "master_key", "celery_settled")]

XID79 = "xid: Xid 79 on GPU 0: GPU has fallen off the bus"


def test_a_fatal_xid_moves_an_sbatch_job_off_the_node_at_once(bob, vision, slurm_jobs):
    sync_nodes()
    job_id = sbatch("bob", "rq-evacuate", "-w", "gpu04", "--gres=gpu:2")
    slurm_jobs.append(job_id)
    wait_until(lambda: running_on(job_id, restarts=0) == "gpu04", what="the sbatch job running on gpu04")
    assert row(job_id) is None   # not adopted yet: evacuation must find it in Slurm

    # Another node with a fatal finding, whatever the drain cap did. Reported first: gpu04's report
    # starts the worker's evacuation at once, and a requeue can only exclude the nodes whose faults
    # are known when it is placed (reported after, gpu03 was sometimes not excluded: a race of
    # the test, not of the product).
    report("gpu03", xid(48))
    subprocess.run([str(ROOT / "cluster/ctl"), "fault", "gpu04", "--xid", "79"], check=True, capture_output=True)
    report("gpu04", xid(79))
    acted = evacuate_node("gpu04", cause=Cause.FATAL_FINDING, detail=XID79)

    # The reports also start the worker's node policy, which evacuates the same node at the same
    # moment; whichever records the run first acts, the other finds it done or claimed. The user
    # sees the same either way: one requeue, away from both bad nodes, within seconds.
    assert acted in ([job_id], [])
    wait_until(lambda: _moved_away(job_id), timeout=15, what="Slurm holding one requeue excluding gpu03 and gpu04")
    wait_until(lambda: running_on(job_id, restarts=1) == "gpu05", timeout=20, what="the job running on gpu05")

    job = row(job_id)
    assert job.adopted and job.owner.username == "bob"
    first = Attempt.objects.get(job=job, number=0)
    assert (first.failure_class, first.cause, first.failed_node) == (FailureClass.INFRASTRUCTURE,
                                                                     Cause.FATAL_FINDING, "gpu04")
    assert first.gpus == 2 and first.evidence["xid"] == 79 and first.outcome == Attempt.Outcome.REQUEUED
    wait_until(lambda: Recovery.objects.get(attempt=first).done_at, timeout=10, what="the recovery marked done")

    # Evacuating again (the node policy does, every check) changes nothing.
    assert evacuate_node("gpu04", cause=Cause.FATAL_FINDING, detail=XID79) == []
    assert Recovery.objects.filter(job=job).count() == 1
    cycles_until(lambda: Attempt.objects.filter(job=job, number=1).exists(), what="attempt 1 seen by the cycle")
    assert scontrol_show(job_id)["Restarts"] == "1"


def _moved_away(job_id: int) -> bool:
    shown = scontrol_show(job_id)
    assert shown["Restarts"] in ("0", "1"), f"requeued more than once: {shown['Restarts']}"
    return shown["Restarts"] == "1" and {"gpu03", "gpu04"} <= set(_expand(shown["ExcNodeList"]))


def _expand(hostlist: str) -> list[str]:
    from portal.slurm.parse import expand_hostlist  # noqa: PLC0415

    return expand_hostlist(hostlist)
