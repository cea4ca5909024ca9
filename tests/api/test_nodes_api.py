"""/api/v1/nodes: everyone reads; only admins drain and resume, always with a reason."""

from __future__ import annotations

import pytest

from portal.nodes.models import Node, NodeAction
from portal.nodes.services import NodeActionRefused, resume_node, sync_nodes
from portal.slurm import gateway

NODE = "cpu02"   # drain tests only ever touch cpu02, and always resume it


@pytest.fixture
def nodes(world):
    sync_nodes()
    yield
    if gateway.get_node(NODE).drained:
        gateway.resume_node(NODE)


def test_anyone_logged_in_reads_the_node_list(api, nodes):
    resp = api["alice"].get("/nodes")
    assert resp.status_code == 200
    by_name = {n["name"]: n for n in resp.json()}
    assert len(by_name) == 10
    assert by_name["gpu01"]["gpus"] == 4 and by_name["gpu01"]["gres"] == "gpu:h100:4"


def test_a_researcher_cannot_drain(api, nodes):
    resp = api["alice"].post(f"/nodes/{NODE}/drain", {"reason": "I do not like it"})
    assert resp.status_code == 403
    assert not gateway.get_node(NODE).drained


def test_a_drain_needs_a_reason(api, nodes):
    assert api["admin"].post(f"/nodes/{NODE}/drain", {}).status_code == 422
    assert api["admin"].post(f"/nodes/{NODE}/drain", {"reason": "   "}).status_code == 400
    assert not gateway.get_node(NODE).drained


def test_an_admin_drains_and_resumes_with_history(api, nodes, world):
    resp = api["admin"].post(f"/nodes/{NODE}/drain", {"reason": "fan replacement"})
    assert resp.status_code == 200
    assert "DRAIN" in resp.json()["flags"] and resp.json()["reason"] == "fan replacement"
    slurm = gateway.get_node(NODE)
    assert slurm.drained and slurm.reason == "fan replacement"
    resp = api["admin"].post(f"/nodes/{NODE}/resume", {"reason": "fan replaced"})
    assert resp.status_code == 200
    assert not gateway.get_node(NODE).drained
    history = list(NodeAction.objects.filter(node__name=NODE).order_by("at").values_list("kind", "actor__username"))
    assert history == [("drain", "admin"), ("resume", "admin")]


def test_people_cannot_pose_as_the_health_policy(api, nodes):
    resp = api["admin"].post(f"/nodes/{NODE}/drain", {"reason": "portal: xid 79"})
    assert resp.status_code == 400
    assert "reserved" in resp.json()["detail"]


def test_the_policy_never_resumes_a_manual_drain(api, nodes):
    api["admin"].post(f"/nodes/{NODE}/drain", {"reason": "waiting for a new GPU"})
    with pytest.raises(NodeActionRefused, match="only a person resumes it"):
        resume_node(node=Node.objects.get(name=NODE), automatic=True)
    assert gateway.get_node(NODE).drained


@pytest.mark.parametrize("name", ["gpu99", "..", "a b", "x" * 80])
def test_unknown_or_malformed_nodes_are_404(api, nodes, name):
    assert api["admin"].post(f"/nodes/{name}/drain", {"reason": "x"}).status_code == 404
