"""A node whose slurmd hangs is recorded when Slurm marks it NOT_RESPONDING (or DOWN), and again
when it responds after `./cluster/ctl heal`: the periodic check (check_nodes_task) on a real worker."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from portal.nodes.models import Node, NodeAction
from tests.conftest import ROOT, wait_until
from tests.nodes.policy_support import own_nodes, report  # noqa: F401
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
from workers.tasks.nodes import check_nodes_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.usefixtures("own_nodes", "celery_worker_session")]
CTL = str(ROOT / "cluster/ctl")


def check() -> dict:
    return check_nodes_task.delay().get(timeout=60)


def recorded(kind: str, node: str = "gpu08", since: datetime | None = None) -> list[NodeAction]:
    since = since or datetime.min.replace(tzinfo=UTC)
    return list(NodeAction.objects.filter(node__name=node, kind=kind, at__gte=since))


def responding(node: str) -> bool:
    check()
    return Node.objects.get(name=node).unreachable_since is None


def test_a_hung_node_is_recorded_down_once_and_up_again_after_heal():
    # On a busy machine slurmctld may flag a slow slurmd NOT_RESPONDING for a moment: start clean.
    wait_until(lambda: responding("gpu08"), timeout=60, interval=1, what="gpu08 responding before the test")
    since = timezone.now()
    subprocess.run([CTL, "fault", "gpu08", "--hang"], check=True, capture_output=True)
    try:
        # slurmctld notices at its next ping of the node (SlurmdTimeout / 3 at most).
        wait_until(lambda: "gpu08" in check()["down"], timeout=240, interval=3, what="gpu08 recorded unreachable")
        [down] = recorded("down", since=since)
        assert down.automatic and ("NOT_RESPONDING" in down.reason or "DOWN" in down.reason)
        assert Node.objects.get(name="gpu08").unreachable_since is not None
        check()
        assert len(recorded("down", since=since)) == 1  # recorded once per outage, however many checks see it
    finally:
        subprocess.run([CTL, "heal", "gpu08"], check=True, capture_output=True)
    wait_until(lambda: "gpu08" in check()["up"], timeout=120, interval=2, what="gpu08 recorded responding")
    [up] = recorded("up", since=since)
    assert up.detail.startswith("unreachable for ")
    assert Node.objects.get(name="gpu08").unreachable_since is None


@pytest.mark.usefixtures("master_key")
def test_a_responding_node_whose_sensor_went_silent_is_alerted_once():
    report("gpu05", at=time.time() - 600)  # its newest report: 10 minutes old (stale after 5)
    report("gpu04")
    result = check()
    assert result["stale"] == ["gpu05"]
    [alert] = recorded("alert", "gpu05")
    assert alert.reason == "health reports stale" and alert.detail.startswith("no report for 6")
    check()
    assert len(recorded("alert", "gpu05")) == 1 and not recorded("alert", "gpu04")
