"""Drain and resume from the node pages, carried out in the real Slurm (on cpu02 only).

gpu nodes are left alone: the health policy's fault tests use them. Every test that may drain
cpu02 resumes it in a finally block.
"""

from __future__ import annotations

import pytest
from django.test import Client

from portal.nodes.models import Node, NodeAction
from portal.nodes.services import sync_nodes
from portal.slurm import gateway
from tests.conftest import wait_until
from tests.jobs.views_support import build_world, client_for

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

XSS = '<script>alert("pwned")</script>'
ESCAPED = "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"


@pytest.fixture
def world(make_user, cluster):
    return build_world(make_user)


@pytest.fixture
def cpu02(cluster):
    """cpu02 in service before the test, and back in service after it whatever happened."""
    try:
        gateway.resume_node("cpu02")
        sync_nodes()
        yield Node.objects.get(name="cpu02")
    finally:
        gateway.resume_node("cpu02")
        # Slurm pings a resumed node before it is "responding" again; leave it fully back.
        wait_until(lambda: not gateway.get_node("cpu02").flags, what="cpu02 back in service")


def _drained() -> bool:
    return gateway.get_node("cpu02").drained


def test_an_admin_drains_with_a_reason_and_sees_it_in_slurm_and_the_history(world, cpu02):
    resp = client_for(world["admin"]).post("/nodes/cpu02/drain/", {"reason": "replacing DIMM 3"}, follow=True)
    assert resp.redirect_chain[-1][0] == "/nodes/cpu02/"
    html = resp.content.decode()
    assert "cpu02 is draining" in html
    node = gateway.get_node("cpu02")
    assert node.drained and node.reason == "replacing DIMM 3"
    action = NodeAction.objects.get(node=cpu02, kind="drain")
    assert action.actor == world["admin"] and action.ok and not action.automatic
    history = html[html.index('id="node-history"'):html.index('id="node-jobs"')]
    assert "<td>admin</td>" in history and "replacing DIMM 3" in history and 'badge ok">ok<' in history
    assert 'id="node-state">drained<' in html


def test_resume_puts_the_node_back_in_service(world, cpu02):
    admin = client_for(world["admin"])
    admin.post("/nodes/cpu02/drain/", {"reason": "firmware update"})
    assert _drained()
    resp = admin.post("/nodes/cpu02/resume/", {"reason": "firmware done"}, follow=True)
    assert b"cpu02 is back in service" in resp.content
    assert not _drained()
    resume = NodeAction.objects.get(node=cpu02, kind="resume")
    assert resume.actor == world["admin"] and resume.reason == "firmware done" and "firmware update" in resume.detail
    # Slurm pings a resumed node before it counts as responding again.
    wait_until(lambda: b">idle<" in admin.get("/nodes/cpu02/status/").content, what="cpu02 shown idle")


def test_a_drain_from_the_list_goes_back_to_the_list(world, cpu02):
    resp = client_for(world["admin"]).post("/nodes/cpu02/drain/", {"reason": "rack move", "back": "list"},
                                           follow=True)
    assert resp.redirect_chain[-1][0] == "/nodes/"
    html = resp.content.decode()
    assert "cpu02 is draining" in html
    cpu02_row = html[html.index('<tr id="node-cpu02"'):]
    cpu02_row = cpu02_row[:cpu02_row.index("</tr>")]
    assert ">drained<" in cpu02_row and "rack move" in cpu02_row and 'action="/nodes/cpu02/resume/"' in cpu02_row


def test_a_drain_without_a_reason_is_a_form_error_and_drains_nothing(world, cpu02):
    for blank in ("", "   "):
        resp = client_for(world["admin"]).post("/nodes/cpu02/drain/", {"reason": blank})
        assert resp.status_code == 400
        assert b"Give a reason" in resp.content
    assert not _drained()
    assert not NodeAction.objects.filter(node=cpu02).exists()


def test_an_admin_cannot_type_the_policys_reserved_prefix(world, cpu02):
    resp = client_for(world["admin"]).post("/nodes/cpu02/drain/", {"reason": "portal: looks bad"})
    assert resp.status_code == 400
    html = resp.content.decode()
    assert "reserved for automatic drains" in html and 'value="portal: looks bad"' in html
    assert not _drained()


def test_a_researcher_gets_403_on_drain_and_resume(world, cpu02):
    alice = client_for(world["alice"])
    assert alice.post("/nodes/cpu02/drain/", {"reason": "mine now"}).status_code == 403
    assert not _drained()
    client_for(world["admin"]).post("/nodes/cpu02/drain/", {"reason": "maintenance"})
    resp = alice.post("/nodes/cpu02/resume/", {"reason": "I need it"})
    assert resp.status_code == 403 and b"Only admins drain and resume nodes" in resp.content
    assert _drained()
    assert list(NodeAction.objects.filter(node=cpu02).values_list("actor__username", flat=True)) == ["admin"]


def test_drain_and_resume_need_post_and_a_csrf_token(world, cpu02):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world["admin"])
    assert strict.post("/nodes/cpu02/drain/", {"reason": "no token"}).status_code == 403
    assert client_for(world["admin"]).get("/nodes/cpu02/drain/").status_code == 405
    assert not _drained()
    page = strict.get("/nodes/cpu02/").content.decode()
    assert 'name="csrfmiddlewaretoken"' in page


def test_a_script_tag_in_a_drain_reason_is_escaped_everywhere(world, cpu02):
    admin = client_for(world["admin"])
    admin.post("/nodes/cpu02/drain/", {"reason": XSS})
    assert gateway.get_node("cpu02").reason == XSS
    for path in ("/nodes/", "/nodes/rows/", "/nodes/cpu02/", "/nodes/cpu02/status/"):
        html = admin.get(path).content.decode()
        assert XSS not in html and ESCAPED in html, path


def test_unknown_nodes_are_404_for_drain(world, cpu02):
    admin = client_for(world["admin"])
    assert admin.post("/nodes/gpu99/drain/", {"reason": "x"}).status_code == 404
    assert admin.post("/nodes/bad$name/resume/", {"reason": "x"}).status_code == 404


def test_slurms_refusal_is_a_friendly_message(world, cluster):
    # A node the portal still lists but Slurm no longer has (removed from slurm.conf).
    ghost = Node.objects.create(name="ghost01", state="IDLE", partitions=["cpu"])
    resp = client_for(world["admin"]).post("/nodes/ghost01/drain/", {"reason": "retire"}, follow=True)
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "Slurm does not know this node any more (slurm_update error: Invalid node name specified)" in html
    failed = NodeAction.objects.get(node=ghost)
    assert not failed.ok and 'badge bad">failed<' in html
