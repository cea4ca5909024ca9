"""The health policy acting in the real Slurm: reports go through the real intake, a real Celery
worker runs apply_node_policy_task, and sinfo shows the result. Only gpu07 and gpu08 are drained."""

from __future__ import annotations

import logging
import time

import pytest

from portal.nodes.models import Node, NodeAction
from portal.nodes.policy import DRAIN, Decision, NodeEvidence, Thresholds, carry_out
from portal.nodes.services import drain_node
from tests.conftest import wait_until
from tests.nodes.policy_support import drained, own_nodes, report, restore, slurm_state, xid  # noqa: F401
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
from workers.tasks.nodes import apply_node_policy_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("master_key", "own_nodes",
                                                                                 "celery_worker_session")]


def actions(node: str, kind: str) -> list[NodeAction]:
    return list(NodeAction.objects.filter(node__name=node, kind=kind).order_by("at"))


def test_a_fatal_xid_drains_the_node_with_the_portal_prefix():
    report("gpu08", xid(79))
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained in Slurm")
    _, reason = slurm_state("gpu08")
    assert reason.startswith("portal: xid: Xid 79 on GPU 0")
    [action] = actions("gpu08", "drain")
    assert action.automatic and action.ok and action.actor is None


def test_a_healed_node_is_resumed_after_three_clean_checks_and_not_before():
    start = time.time() - 60
    report("gpu08", xid(48), at=start)
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained")
    report("gpu08", at=start + 3)
    report("gpu08", at=start + 6)
    wait_until(lambda: NodeAction.objects.filter(node__name="gpu08").count() >= 1, what="drain recorded")
    time.sleep(2)  # two clean checks processed: not yet
    assert drained("gpu08") and not actions("gpu08", "resume")
    report("gpu08", at=start + 9)
    wait_until(lambda: not drained("gpu08"), timeout=30, what="gpu08 resumed after the third clean check")
    [resume] = actions("gpu08", "resume")
    assert resume.automatic and "3 consecutive clean checks" in resume.reason
    assert resume.detail.startswith("was: portal: xid: Xid 48")


def test_an_admins_manual_drain_is_never_resumed_automatically(admin_user):
    node = Node.objects.get(name="gpu07")
    drain_node(node=node, reason="fan replacement (policy test)", actor=admin_user)
    for i in range(6):
        report("gpu07", at=time.time() - 30 + i)
    processed("gpu07")
    state, reason = slurm_state("gpu07")
    assert state.startswith("drain") and reason == "fan replacement (policy test)"
    assert not actions("gpu07", "resume")


def test_application_xids_leave_the_node_in_service_until_the_third_makes_it_a_lemon():
    base = time.time() - 120
    report("gpu08", xid(13), at=base)
    report("gpu08", xid(43), at=base + 3)
    processed("gpu08")
    assert not drained("gpu08")
    report("gpu08", xid(31), at=base + 6)
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained as a lemon")
    assert slurm_state("gpu08")[1] == "portal: lemon: 3 soft XIDs in 1 h"


def test_the_drain_cap_holds_when_half_the_partition_reports_faults_at_once(caplog):
    """gpu08 fails first and is drained (the cap for 8 GPU nodes is 1); then gpu01-gpu03 fail
    together: half the partition. None of them is drained; admins get an alert for each."""
    report("gpu08", xid(48))
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained")
    try:
        with caplog.at_level(logging.ERROR, logger="portal.nodes.policy"):
            for node in ("gpu01", "gpu02", "gpu03"):
                report(node, xid(64, gpu=2))
            wait_until(lambda: NodeAction.objects.filter(kind="alert").count() == 3, timeout=30,
                       what="three alerts")
        assert not any(drained(node) for node in ("gpu01", "gpu02", "gpu03"))
        alert = NodeAction.objects.get(node__name="gpu02", kind="alert")
        assert alert.automatic and alert.reason.startswith("wanted to drain: xid: Xid 64 on GPU 2")
        assert "partition gpu: 1 of 8 nodes already drained automatically (cap 1)" in alert.detail
        assert sum("node health ALERT" in r.getMessage() for r in caplog.records) == 3
        assert NodeAction.objects.filter(kind="drain").count() == 1
    finally:
        restore("gpu01", "gpu02", "gpu03")  # only if the cap failed


def test_the_same_alert_is_not_repeated_on_every_report():
    report("gpu07", xid(48))
    wait_until(lambda: drained("gpu07"), timeout=30, what="gpu07 drained")
    for _ in range(3):
        report("gpu08", xid(48))
    processed("gpu08")
    assert not drained("gpu08")
    assert len(actions("gpu08", "alert")) == 1


def test_running_the_policy_twice_drains_once():
    report("gpu08", xid(95))
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained")
    node = Node.objects.get(name="gpu08")
    assert apply_node_policy_task.delay(node.pk).get(timeout=30) == "nothing"
    # Even a stale decision (made before the drain) applied again changes nothing in Slurm.
    stale = Decision(DRAIN, "xid: something else")
    assert carry_out(NodeEvidence(node_id=node.pk, name="gpu08"), stale, Thresholds()) == "already drained"
    assert slurm_state("gpu08")[1].startswith("portal: xid: Xid 95")
    assert len(actions("gpu08", "drain")) == 1


def processed(node: str) -> None:
    """Wait until the worker has run the policy for every report sent so far: the test worker is
    a single FIFO consumer, so once one more policy run for the node returns, the earlier ones have."""
    apply_node_policy_task.delay(Node.objects.get(name=node).pk).get(timeout=30)
