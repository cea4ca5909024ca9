"""A node with an open fatal finding takes no new jobs whatever the drain cap says, and its running
jobs are moved off it at once (issue 9: "a fault on a node whose drain the cap refused still moves
its jobs elsewhere"). Real Slurm, the real intake and a real Celery worker; gpu06-gpu08 only."""

from __future__ import annotations

import pytest

from portal.nodes.models import Node, NodeAction
from tests.conftest import wait_until
from tests.nodes.nodeside_support import (
    OTHER_GPU_NODES,
    job,
    running_on,
    sbatch,
)
from tests.nodes.policy_support import drained, own_nodes, report, slurm_state, xid  # noqa: F401
from tests.recovery.support import vision  # noqa: F401 - the jobs' team: recovery moves portal teams' jobs
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
from workers.tasks.nodes import check_nodes_task

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("master_key", "own_nodes", "celery_settled", "vision")]


def start_on(node: str, slurm_jobs, *extra: str) -> int:
    job_id, marker = sbatch("-w", node, "--gres=gpu:h100:4", *extra)
    slurm_jobs.append((job_id, marker))
    wait_until(lambda: running_on(job_id, node), timeout=60, interval=0.5, what=f"job {job_id} running on {node}")
    return job_id


def test_a_fatal_fault_over_the_cap_drains_the_node_and_no_new_job_lands_there(slurm_jobs, evacuations):
    report("gpu08", xid(48))  # the cap for 8 GPU nodes is 1: gpu08 fills it
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained")
    # Kept off gpu07 once moved, so gpu07 stays free for the job below.
    running = start_on("gpu06", slurm_jobs, "-x", "gpu07")

    report("gpu06", xid(79))

    wait_until(lambda: drained("gpu06"), timeout=30, what="gpu06 drained although the cap is full")
    state, reason = slurm_state("gpu06")
    assert reason.startswith("portal: xid: Xid 79") and state in ("draining", "drained")
    [alert] = NodeAction.objects.filter(node__name="gpu06", kind="alert")
    assert alert.reason.startswith("drained over the cap: xid: Xid 79")
    # A job only gpu06 could run stays waiting; one confined to gpu06-gpu08 lands elsewhere.
    pinned, marker = sbatch("-w", "gpu06", "--gres=gpu:h100:1")
    slurm_jobs.append((pinned, marker))
    free, marker = sbatch("-x", OTHER_GPU_NODES, "--gres=gpu:h100:1")
    slurm_jobs.append((free, marker))
    wait_until(lambda: job(free)["JobState"] == "RUNNING", timeout=60, interval=0.5, what="the free job running")
    assert job(free)["NodeList"] == "gpu07"
    fields = job(pinned)
    assert fields["JobState"] == "PENDING" and "ReqNodeNotAvail" in fields["Reason"]
    assert fields["NodeList"] in ("", "(null)")
    # The running job is moved at once, not when Slurm notices.
    wait_until(lambda: any(e.node == "gpu06" for e in evacuations), timeout=30, what="gpu06 evacuated")
    first = next(e for e in evacuations if e.node == "gpu06")
    assert first.cause == "fatal_finding" and first.detail.startswith("xid: Xid 79 on GPU 0")
    assert running in first.moved
    wait_until(lambda: not running_on(running, "gpu06"), timeout=30, what="the job off gpu06")
    assert int(job(running)["Restarts"]) >= 1


def test_jobs_leave_a_node_an_admin_had_drained_when_it_turns_fatal(slurm_jobs, evacuations, admin_user):
    from portal.nodes.services import drain_node  # noqa: PLC0415

    running = start_on("gpu07", slurm_jobs)
    drain_node(node=Node.objects.get(name="gpu07"), reason="fan replacement (nodeside test)", actor=admin_user)

    report("gpu07", xid(79))

    wait_until(lambda: any(e.node == "gpu07" for e in evacuations), timeout=30, what="gpu07 evacuated")
    assert slurm_state("gpu07")[1] == "fan replacement (nodeside test)"  # the admin's drain is not relabelled
    assert [a.reason for a in NodeAction.objects.filter(node__name="gpu07", kind="drain")] == [
        "fan replacement (nodeside test)"]
    moved = next(e for e in evacuations if e.node == "gpu07")
    assert running in moved.moved
    wait_until(lambda: not running_on(running, "gpu07"), timeout=30, what="the job off gpu07")
    # The periodic check asks again while any job is still there; evacuate_node is idempotent,
    # so the job is requeued once, not once per check.
    check_nodes_task.delay().get(timeout=60)
    assert job(running)["Restarts"] == "1"


def test_a_node_without_a_fatal_finding_is_never_evacuated(slurm_jobs, evacuations):
    start_on("gpu07", slurm_jobs)
    report("gpu07", xid(13))  # an application XID: the job's own fault
    check_nodes_task.delay().get(timeout=60)
    assert not drained("gpu07") and evacuations == []
