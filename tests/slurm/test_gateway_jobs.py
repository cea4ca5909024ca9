"""Contract tests for per-user job actions, against the live cluster."""

from __future__ import annotations

import re
import time

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmNotFound, SlurmRejected
from tests.conftest import wait_until
from tests.slurm.helpers import output_of, spec_for, wait_state

pytestmark = pytest.mark.usefixtures("slurm_accounts")

SLEEPER = "#!/bin/bash\nsleep 120\n"


@pytest.fixture
def cleanup():
    submitted: list[tuple[str, int]] = []
    yield submitted
    for user, job_id in submitted:
        gateway.cancel_job(user, job_id)


def test_it_runs_a_job_as_the_submitting_user(unique):
    script = "#!/bin/bash\necho \"user=$(id -un)\"\necho \"gpus=$SLURM_JOB_GPUS\"\n"
    job_id = gateway.submit_job("alice", spec_for("alice", unique, script, gpus_per_node=2,
                                                  gpu_type="h100"))
    assert wait_state(job_id, {"COMPLETED", "FAILED"}) == "COMPLETED"
    out = output_of("alice", unique, job_id)
    assert "user=alice" in out
    assert re.search(r"^gpus=[0-3],[0-3]$", out, re.M)  # Slurm bound two of the node's four GPUs


def test_bob_cannot_cancel_alices_job(unique, cleanup):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER))
    cleanup.append(("alice", job_id))
    with pytest.raises(SlurmRejected, match=r"[Pp]ermission denied"):
        gateway.cancel_job("bob", job_id)
    assert gateway.get_job(job_id).state in {"PENDING", "RUNNING"}


def test_it_cancels_own_job(unique):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER))
    wait_state(job_id, {"RUNNING"})
    gateway.cancel_job("alice", job_id)
    assert wait_state(job_id, {"CANCELLED"}) == "CANCELLED"


def test_cancelling_an_ended_job_is_a_no_op(unique):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, "#!/bin/bash\ntrue\n"))
    wait_state(job_id, {"COMPLETED"})
    gateway.cancel_job("alice", job_id)  # must not raise
    assert gateway.get_job(job_id).state == "COMPLETED"


def test_held_job_reads_pending_with_its_reason(unique, cleanup):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER, hold=True))
    cleanup.append(("alice", job_id))
    job = gateway.get_job(job_id)
    assert (job.state, job.reason) == ("PENDING", "JobHeldUser")
    [swept] = gateway.list_jobs(job_ids=[job_id])
    assert (swept.state, swept.reason) == ("PENDING", "JobHeldUser")


def test_it_holds_and_releases_a_pending_job(unique, cleanup):
    # Submitted held: it sits PENDING until its owner releases it.
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER, hold=True))
    cleanup.append(("alice", job_id))
    gateway.release_job("alice", job_id)
    assert wait_state(job_id, {"RUNNING"}) == "RUNNING"


def test_bob_cannot_release_alices_held_job(unique, cleanup):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER, hold=True))
    cleanup.append(("alice", job_id))
    with pytest.raises(SlurmRejected):
        gateway.release_job("bob", job_id)
    assert gateway.get_job(job_id).reason == "JobHeldUser"


def test_it_requeues_own_running_job(unique, cleanup):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER))
    cleanup.append(("alice", job_id))
    wait_state(job_id, {"RUNNING"})
    gateway.requeue_job("alice", job_id)
    assert gateway.get_job(job_id).restarts == 1


def test_bob_cannot_requeue_alices_job(unique, cleanup):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER))
    cleanup.append(("alice", job_id))
    wait_state(job_id, {"RUNNING"})
    with pytest.raises(SlurmRejected):
        gateway.requeue_job("bob", job_id)
    assert gateway.get_job(job_id).restarts == 0


def test_slurm_rejects_an_account_the_user_is_not_in(unique):
    with pytest.raises(SlurmRejected, match="Invalid account"):
        gateway.submit_job("carol", spec_for("carol", unique, SLEEPER, account="vision"))


def test_slurm_rejects_more_gpus_than_a_node_has(unique):
    with pytest.raises(SlurmRejected):
        gateway.submit_job("alice", spec_for("alice", unique, SLEEPER, gpus_per_node=9, gpu_type="h100"))


def test_unknown_job_is_not_found():
    with pytest.raises(SlurmNotFound):
        gateway.get_job(987654321)
    with pytest.raises(SlurmNotFound):
        gateway.hold_job("alice", 987654321)


def test_failed_job_reports_its_exit_code_in_accounting(unique):
    job_id = gateway.submit_job("alice", spec_for("alice", unique, "#!/bin/bash\nexit 3\n"))
    assert wait_state(job_id, {"FAILED"}) == "FAILED"
    assert gateway.get_job(job_id).exit_code == 3

    def recorded():
        rows = [r for r in gateway.accounting([job_id]) if r.state == "FAILED"]
        return rows[0] if rows else None
    record = wait_until(recorded, timeout=20, what="sacct to record the failure")
    assert record.exit_code == 3


def test_queue_sweep_keeps_names_with_separators_intact(unique, cleanup):
    spec = spec_for("alice", unique, SLEEPER, hold=True)
    spec = type(spec)(**{**spec.__dict__, "name": f"a|b <c> {unique}", "comment": "x|y"})
    job_id = gateway.submit_job("alice", spec)
    cleanup.append(("alice", job_id))
    [job] = gateway.list_jobs(job_ids=[job_id])
    assert (job.name, job.comment, job.user, job.account) == (f"a|b <c> {unique}", "x|y", "alice", "vision")


def test_update_time_tells_whether_the_queue_changed(unique, cleanup):
    later = int(time.time()) + 60
    assert gateway.jobs_changed_since(later) is False
    before = int(time.time()) - 1
    cleanup.append(("alice", gateway.submit_job("alice", spec_for("alice", unique, SLEEPER, hold=True))))
    assert gateway.jobs_changed_since(before) is True
