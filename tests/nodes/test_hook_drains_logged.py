"""Every drain is in the node's action log, once, with who made it: the portal's own, the nodes'
health hooks' (they drain locally through slurm_plugins/slurmctl.py) and an admin's with scontrol;
and the drain cap counts the hooks' drains. Real Slurm, real sync; gpu06-gpu08 only."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from portal.nodes.models import Node, NodeAction
from portal.nodes.services import drain_node, sync_nodes
from tests.conftest import wait_until
from tests.nodes.nodeside_support import CTL
from tests.nodes.policy_support import drained, own_nodes, report, slurm_state, xid  # noqa: F401
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
from workers.tasks.nodes import apply_node_policy_task, check_nodes_task

# At least this test's own drain; other people's hook drains on the shared cluster count too.
CAP_FULL = r"partition gpu: [1-8] of 8 nodes already drained automatically \(cap 1\)"

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("master_key", "own_nodes", "celery_settled")]


def log_of(node: str, kind: str) -> list[NodeAction]:
    return list(NodeAction.objects.filter(node__name=node, kind=kind).order_by("at", "id"))


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True)


@pytest.fixture
def faulty_gpu07():
    """gpu07 with an XID 79 on GPU 0; healed (and resumed by own_nodes) afterwards."""
    sync_nodes()
    subprocess.run([CTL, "fault", "gpu07", "--xid", "79"], check=True, capture_output=True)
    yield "gpu07"
    subprocess.run([CTL, "heal", "gpu07"], check=True, capture_output=True)


def test_a_hook_drain_is_logged_once_with_who_made_it(faulty_gpu07):
    # The health check finds the fault within its interval (3 s) and, its report not taken by
    # this test's portal, drains the node itself with the `portal:` prefix.
    wait_until(lambda: drained("gpu07"), timeout=30, interval=0.5, what="gpu07 drained by its health hook")
    _, reason = slurm_state("gpu07")
    assert reason.startswith("portal: ")  # the sensor's words, e.g. "portal: gpu-unreachable: GPU 0 is lost"

    check_nodes_task.delay().get(timeout=60)
    check_nodes_task.delay().get(timeout=60)
    sync_nodes()

    [logged] = log_of("gpu07", "drain")
    assert logged.automatic and logged.ok and logged.actor is None
    assert logged.reason == reason
    assert logged.detail == "drained outside the portal: health hook on the node (prolog, epilog or health check)"


def test_the_cap_counts_a_hook_drain(faulty_gpu07):
    wait_until(lambda: drained("gpu07"), timeout=30, interval=0.5, what="gpu07 drained by its health hook")
    sync_nodes()
    base = time.time() - 60
    for i, number in enumerate((13, 43, 31)):  # gpu06 turns lemon: the cap (1 node) is full
        report("gpu06", xid(number), at=base + 3 * i)
    apply_node_policy_task.delay(Node.objects.get(name="gpu06").pk).get(timeout=30)

    assert not drained("gpu06")
    [alert] = log_of("gpu06", "alert")
    assert re.search(CAP_FULL, alert.detail), alert.detail


def test_an_admins_scontrol_drain_and_resume_are_logged_once_each():
    sync_nodes()
    scontrol("update", "nodename=gpu08", "state=drain", "reason=disk swap (nodeside test)")
    try:
        sync_nodes()
        sync_nodes()
        [logged] = log_of("gpu08", "drain")
        assert (logged.reason, logged.automatic) == ("disk swap (nodeside test)", False)
        assert logged.detail == "drained outside the portal: by hand, outside the portal (scontrol)"
    finally:
        scontrol("update", "nodename=gpu08", "state=resume")
    sync_nodes()
    sync_nodes()
    [resumed] = log_of("gpu08", "resume")
    assert resumed.detail.startswith("resumed outside the portal") and "disk swap (nodeside test)" in resumed.detail
    assert len(log_of("gpu08", "drain")) == 1


def test_the_portals_own_drain_is_logged_once_however_many_syncs_see_it(admin_user):
    sync_nodes()
    drain_node(node=Node.objects.get(name="gpu08"), reason="nodeside test drain", actor=admin_user)
    for _ in range(3):
        sync_nodes()
    [logged] = log_of("gpu08", "drain")
    assert logged.actor == admin_user and logged.reason == "nodeside test drain"


def test_the_issues_case_every_drain_over_the_cap_is_logged_with_who(faulty_gpu07):
    """The issue's experiment, on three nodes: faults on several nodes at once. The portal drains
    the first within the cap and the next over it (with an alert); the third node's own health
    hook drains it. The log holds each drain once, with who made it."""
    report("gpu08", xid(79))
    wait_until(lambda: drained("gpu08"), timeout=30, what="gpu08 drained by the portal")
    report("gpu06", xid(79, gpu=1))
    wait_until(lambda: drained("gpu06"), timeout=30, what="gpu06 drained by the portal over the cap")
    wait_until(lambda: drained("gpu07"), timeout=30, interval=0.5, what="gpu07 drained by its hook")
    for _ in range(2):
        check_nodes_task.delay().get(timeout=60)

    drains = {a.node.name: a for a in NodeAction.objects.filter(kind="drain", node__name__in=["gpu06", "gpu07",
                                                                                              "gpu08"])}
    assert NodeAction.objects.filter(kind="drain", node__name__in=["gpu06", "gpu07", "gpu08"]).count() == 3
    assert drains["gpu08"].detail == "" and drains["gpu08"].reason.startswith("portal: xid: Xid 79 on GPU 0")
    assert drains["gpu06"].detail == "" and drains["gpu06"].reason.startswith("portal: xid: Xid 79 on GPU 1")
    assert drains["gpu07"].detail.endswith("health hook on the node (prolog, epilog or health check)")
    [alert] = log_of("gpu06", "alert")
    assert alert.reason.startswith("drained over the cap")
