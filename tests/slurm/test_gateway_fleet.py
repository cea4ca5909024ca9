"""Fleet reads and admin writes, against the live cluster."""

from __future__ import annotations

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmNotFound, SlurmRejected

pytestmark = pytest.mark.usefixtures("cluster")


def test_node_list_shows_all_ten_nodes_with_their_gres():
    nodes = {n.name: n for n in gateway.list_nodes()}
    assert sorted(nodes) == [f"cpu0{i}" for i in (1, 2)] + [f"gpu0{i}" for i in range(1, 9)]
    for i in range(1, 9):
        node = nodes[f"gpu0{i}"]
        assert node.gres == "gpu:h100:4"
        assert node.gpus == 4
        assert node.cpus == 32
        assert node.partitions == ("gpu",)
    assert nodes["cpu01"].gpus == 0
    assert nodes["cpu01"].partitions == ("cpu",)


def test_partitions_report_time_limits_and_gpus():
    parts = {p.name: p for p in gateway.list_partitions()}
    assert parts["gpu"].is_default and not parts["cpu"].is_default
    assert parts["gpu"].total_gpus == 32
    assert parts["gpu"].max_time_min == 2 * 24 * 60


def test_unknown_node_is_not_found():
    with pytest.raises(SlurmNotFound):
        gateway.get_node("gpu99")


def test_drain_and_resume_are_idempotent():
    try:
        gateway.drain_node("cpu02", "portal-test: contract")
        gateway.drain_node("cpu02", "portal-test: again")   # draining twice is fine
        node = gateway.get_node("cpu02")
        assert node.drained
        assert node.reason == "portal-test: again"
    finally:
        gateway.resume_node("cpu02")
    gateway.resume_node("cpu02")                            # resuming twice is a no-op
    assert not gateway.get_node("cpu02").drained


def test_drain_needs_a_reason():
    with pytest.raises(SlurmRejected, match="reason"):
        gateway.drain_node("cpu02", "  ")


def test_draining_an_unknown_node_is_not_found():
    with pytest.raises((SlurmNotFound, SlurmRejected)):
        gateway.drain_node("nosuchnode", "x")
