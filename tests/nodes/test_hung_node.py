"""A hung node (its slurmd killed by `./cluster/ctl fault NODE --hang`, so its health checks stop
too) is marked DOWN by the portal within PORTAL_HUNG_AFTER_S, not after Slurm's SlurmdTimeout
(300 s), and its job leaves it; a node whose sensor alone went silent is only alerted. Real
Slurm, the real intake, the real find_hung_nodes_task on a Celery worker; gpu06-gpu08 only."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.nodes.hung import HungRule, check_node
from portal.nodes.models import Node, NodeAction
from portal.nodes.services import sync_nodes
from tests.conftest import wait_until
from tests.nodes.nodeside_support import (
    CTL,
    job,
    node_fields,
    pids,
    running_on,
    sbatch,
)
from tests.nodes.policy_support import own_nodes, report  # noqa: F401
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
from workers.tasks.nodes import check_nodes_task, find_hung_nodes_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.usefixtures("master_key", "own_nodes", "celery_settled")]
AFTER_S, CONFIRM_S = 15, 5  # the defaults, set here so a site's environment cannot change the test


@pytest.fixture(autouse=True)
def hung_rule(settings):
    settings.PORTAL_HUNG_AFTER_S, settings.PORTAL_HUNG_CONFIRM_S = AFTER_S, CONFIRM_S
    settings.PORTAL_HUNG_CHECK_SECONDS = 3.0


def heal(node: str) -> None:
    subprocess.run([CTL, "heal", node], check=True, capture_output=True)
    wait_until(lambda: node_fields(node)["State"] in ("IDLE", "MIXED", "ALLOCATED"), timeout=60, interval=0.5,
               what=f"{node} back in service")


def hung_check_until(predicate, *, timeout: float, what: str) -> float:
    """Run the hung-node check every 3 s (as beat does) until `predicate`; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        find_hung_nodes_task.delay().get(timeout=30)
        time.sleep(3)
    return time.monotonic() - started


def gpus_allocated(node: str) -> str:
    return node_fields(node).get("AllocTRES", "")


def test_a_hung_node_is_marked_down_within_the_set_time_and_its_job_runs_elsewhere(slurm_jobs, evacuations):
    job_id, marker = sbatch("-x", "gpu[01-07]", "--gres=gpu:h100:4")  # placed on gpu08
    slurm_jobs.append((job_id, marker))
    wait_until(lambda: running_on(job_id, "gpu08"), timeout=60, interval=0.5, what="the job running on gpu08")
    sync_nodes()
    report("gpu08")  # its sensor's last word before the hang
    hung_at = time.monotonic()
    subprocess.run([CTL, "fault", "gpu08", "--hang"], check=True, capture_output=True)
    try:
        took = hung_check_until(lambda: node_fields("gpu08")["State"].startswith("DOWN"), timeout=AFTER_S + 25,
                                what="gpu08 DOWN")
        to_down = time.monotonic() - hung_at
        print(f"\n--hang to DOWN: {to_down:.1f} s (checks for {took:.1f} s)")
        assert AFTER_S - 1 <= to_down <= AFTER_S + CONFIRM_S + 10
        assert node_fields("gpu08")["Reason"].startswith("portal: hung: no health report for ")
        fields = job(job_id)  # requeued by Slurm, and not held back 121 s for its begin time
        assert fields["JobState"] == "PENDING" and int(fields["Restarts"]) >= 1, fields
        assert fields["Reason"] != "BeginTime", fields
        [down] = NodeAction.objects.filter(node__name="gpu08", kind="down")
        assert down.automatic and down.reason.startswith("portal: hung: no health report for ")
        assert down.detail.startswith(f"marked DOWN in Slurm by the portal (hung node); jobs requeued by Slurm: "
                                      f"{job_id}, made eligible at once: {job_id};")
        [moved] = [e for e in evacuations if e.node == "gpu08"]
        assert moved.cause == "hung_node" and moved.detail == down.reason
        # Where the recovery part would send it: anywhere but the hung node (here: gpu06, gpu07).
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "ExcNodeList=gpu[01-05],gpu08"], check=True)
        wait_until(lambda: job(job_id)["JobState"] == "RUNNING", timeout=15, interval=0.2, what="running elsewhere")
        elsewhere = job(job_id)["NodeList"]
        print(f"--hang to RUNNING on {elsewhere}: {time.monotonic() - hung_at:.1f} s")
        # The old copy: slurmctld cannot reach it without slurmd, so it still runs (fencing is the
        # checkpoint generation file's job).
        print(f"old copy of job {job_id} still running after DOWN: {bool(pids(marker))}")
        find_hung_nodes_task.delay().get(timeout=30)
        check_nodes_task.delay().get(timeout=60)
        assert NodeAction.objects.filter(node__name="gpu08", kind="down").count() == 1
    finally:
        heal("gpu08")
    check_nodes_task.delay().get(timeout=60)
    [up] = NodeAction.objects.filter(node__name="gpu08", kind="up")
    assert "ReturnToService=2" in up.detail
    # The old copy registers "on wrong node" after the heal; the new run keeps its GPUs, and they
    # are free again when it ends (no GPUs leak on its node).
    time.sleep(5)
    assert running_on(job_id, elsewhere)
    subprocess.run(["scancel", str(job_id)], check=True)
    wait_until(lambda: "gres/gpu" not in gpus_allocated(elsewhere), timeout=30, interval=0.5,
               what=f"{elsewhere}'s GPUs free after the job")


def test_a_sensor_only_silence_is_alerted_and_never_downs_the_node():
    sync_nodes()
    report("gpu07", at=time.time() - AFTER_S - 10)  # its sensor went quiet; its slurmd runs on
    result = find_hung_nodes_task.delay().get(timeout=30)
    assert "gpu07" in result["probed"] and "gpu07" in result["alerted"] and not result["downed"]
    find_hung_nodes_task.delay().get(timeout=30)
    assert node_fields("gpu07")["State"] == "IDLE" or not node_fields("gpu07")["State"].startswith("DOWN")
    [alert] = NodeAction.objects.filter(node__name="gpu07", kind="alert")
    assert alert.reason == "sensors silent, slurmd answers" and "not marked down" in alert.detail
    assert not NodeAction.objects.filter(node__name="gpu07", kind="down").exists()


def test_one_late_look_at_a_silent_slurmd_does_not_down_the_node():
    """The checker was away (a restart): an old 'silent since' says nothing about slurmd now."""
    sync_nodes()
    report("gpu06", at=time.time() - AFTER_S - 10)
    long_ago = timezone.now() - timedelta(minutes=5)
    Node.objects.filter(name="gpu06").update(slurmd_silent_since=long_ago, slurmd_probed_at=long_ago)
    subprocess.run([CTL, "fault", "gpu06", "--hang"], check=True, capture_output=True)
    try:
        node = Node.objects.get(name="gpu06")
        assert check_node(node, HungRule(after_s=AFTER_S, confirm_s=CONFIRM_S)) == "silent"
        assert not node_fields("gpu06")["State"].startswith("DOWN")
        assert Node.objects.get(name="gpu06").slurmd_silent_since > long_ago  # the clock restarted
    finally:
        heal("gpu06")


def test_a_node_that_never_reported_is_not_judged():
    sync_nodes()
    Node.objects.filter(name="gpu06").update(last_health_at=None)
    assert "gpu06" not in find_hung_nodes_task.delay().get(timeout=30)["probed"]
