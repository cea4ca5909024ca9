"""The health policy acting in the real Slurm: reports go through the real intake, a real Celery
worker runs apply_node_policy_task, and sinfo shows the result. Only gpu06-gpu08 are drained."""

from __future__ import annotations

import logging
import re
import time

import pytest

from portal.nodes.models import Node, NodeAction
from portal.nodes.policy import DRAIN, Decision, NodeEvidence, Thresholds, carry_out
from portal.nodes.services import drain_node
from tests.conftest import wait_until
from tests.nodes.policy_support import drained, own_nodes, report, restore, slurm_state, xid  # noqa: F401
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
from workers.tasks.nodes import apply_node_policy_task

# At least this test's own drain; other people's hook drains on the shared cluster count too.
CAP_FULL = r"partition gpu: [1-8] of 8 nodes already drained automatically \(cap 1\)"

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


def test_application_xids_leave_the_node_in_service_until_the_third_makes_it_a_lemon(settings):
    settings.PORTAL_HEALTH_DRAIN_CAP = 0.5  # about the lemon rule, not the cap: others' drains must not stop it
    base = time.time() - 120
    report("gpu08", xid(13), at=base)
    report("gpu08", xid(43), at=base + 3)
    processed("gpu08")
    assert not drained("gpu08")
    report("gpu08", xid(31), at=base + 6)
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained as a lemon")
    assert slurm_state("gpu08")[1] == "portal: lemon: 3 soft XIDs in 1 h"


def lemon(node: str) -> None:
    """Three application XIDs in the window: a lemon, which the cap may stop (a fatal fault it may not)."""
    base = time.time() - 60
    for i, number in enumerate((13, 43, 31)):
        report(node, xid(number), at=base + 3 * i)


def test_the_drain_cap_holds_for_lemons_when_several_turn_bad_at_once(caplog):
    """gpu08 fails first and is drained (the cap for 8 GPU nodes is 1); then gpu06 and gpu07 turn
    lemon together. Neither is drained; admins get an alert for each."""
    report("gpu08", xid(48))
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained")
    with caplog.at_level(logging.ERROR, logger="portal.nodes.policy"):
        for node in ("gpu06", "gpu07"):
            lemon(node)
        wait_until(lambda: NodeAction.objects.filter(kind="alert").count() == 2, timeout=30, what="two alerts")
    assert not any(drained(node) for node in ("gpu06", "gpu07"))
    alert = NodeAction.objects.get(node__name="gpu07", kind="alert")
    assert alert.automatic and alert.reason.startswith("wanted to drain: lemon: 3 soft XIDs")
    assert re.search(CAP_FULL, alert.detail), alert.detail
    assert sum("node health ALERT" in r.getMessage() for r in caplog.records) == 2
    assert NodeAction.objects.filter(kind="drain").count() == 1


def test_a_fatal_fault_drains_over_the_cap_and_says_so():
    report("gpu08", xid(48))
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained")
    report("gpu07", xid(79))
    wait_until(lambda: drained("gpu07"), timeout=30, what="gpu07 drained over the cap")
    assert slurm_state("gpu07")[1].startswith("portal: xid: Xid 79")
    [alert] = actions("gpu07", "alert")
    assert alert.reason.startswith("drained over the cap: xid: Xid 79")
    assert re.search(CAP_FULL, alert.detail), alert.detail
    assert [a.ok for a in actions("gpu07", "drain")] == [True]


def test_the_same_alert_is_not_repeated_on_every_report():
    report("gpu07", xid(48))
    wait_until(lambda: drained("gpu07"), timeout=30, what="gpu07 drained")
    lemon("gpu08")
    for _ in range(3):
        report("gpu08")  # still a lemon (its XIDs are in the window): the same reason each time
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


def test_a_resume_that_lost_the_race_to_another_is_not_an_error():
    # Two policy runs for one node at once (the worker runs two tasks in parallel): both read the
    # node drained, the other resumed it first, and Slurm refuses the second update.
    from portal.slurm import gateway  # noqa: PLC0415

    gateway.drain_node("gpu08", "portal: test: drained for the race")
    seen = gateway.get_node("gpu08")
    assert seen.drained
    gateway.resume_node("gpu08")   # the other resume

    gateway.resume_if_out("gpu08", seen)   # no SlurmRejected

    assert not drained("gpu08")
