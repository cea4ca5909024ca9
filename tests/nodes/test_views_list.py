"""The node list: every node's state, GPUs, jobs and health; filters; read-only for researchers."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.nodes import queries
from portal.nodes.models import Finding, HealthReport, Node
from portal.nodes.policy import Thresholds, alert_stale_reports
from portal.nodes.services import sync_nodes
from portal.nodes.views import present, state_word
from portal.slurm import gateway
from portal.slurm.types import NodeInfo
from tests.jobs.views_support import build_world, client_for, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user, cluster):
    sync_nodes()  # the Node table as the beat task would have left it
    return build_world(make_user)


def row(html: str, name: str) -> str:
    """One node's <tr> from the page."""
    match = re.search(rf'<tr id="node-{name}".*?</tr>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(0)


def report(node_name: str, *, ago_s: float, findings: list[tuple[str, str]] = ()) -> HealthReport:
    """A stored health report with (severity, detail) findings, as the intake would leave it."""
    node = Node.objects.get(name=node_name)
    sent = timezone.now() - timedelta(seconds=ago_s)
    clean = not any(severity in {"fatal", "warning"} for severity, _ in findings)
    rep = HealthReport.objects.create(node=node, source="healthcheck", sent_at=sent, received_at=sent,
                                      nonce=f"{node_name}-{sent.timestamp()}", clean=clean)
    for severity, detail in findings:
        Finding.objects.create(report=rep, node=node, check_name="xid", severity=severity, action="drain",
                               gpu=1, xid=79, detail=detail, sent_at=sent)
    Node.objects.filter(pk=node.pk).update(last_health_at=sent, last_health_ok=clean)
    return rep


def test_the_list_needs_a_login(client):
    resp = client.get("/nodes/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


def _idle_gpu_node() -> str:
    """A GPU node Slurm shows idle right now (other suites on this cluster drain gpu nodes)."""
    idle = [n.name for n in gateway.list_nodes() if n.gpus and n.state == "IDLE" and not n.flags]
    assert idle, "no idle GPU node on the cluster"
    return idle[0]


def test_an_admin_sees_every_node_with_its_gpus_and_drain_controls(world):
    idle = _idle_gpu_node()
    html = client_for(world["admin"]).get("/nodes/").content.decode()
    names = ["cpu01", "cpu02", *(f"gpu{i:02d}" for i in range(1, 9))]
    for name in names:
        assert f'href="/nodes/{name}/"' in html
        assert re.search(rf'action="/nodes/{name}/(drain|resume)/"', row(html, name))
    assert 'class="badge ok"' in row(html, idle) and ">idle<" in row(html, idle)
    assert "0 / 4" in row(html, idle) and 'class="bar gpu"' in row(html, idle)
    assert "no GPUs" in row(html, "cpu01")
    assert "Drain…" in html
    assert '/ 32</span></span> GPUs in use' in html  # 8 nodes x 4 GPUs


def test_a_researcher_sees_the_same_list_without_controls(world):
    resp = client_for(world["alice"]).get("/nodes/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "gpu08" in html and ">idle<" in row(html, "gpu08")
    assert "/drain/" not in html and "/resume/" not in html and "Drain…" not in html
    assert "Read only" in html


def test_running_jobs_are_counted_on_every_node_of_their_hostlist(world):
    make_job(world["alice"], world["vision"], state="RUNNING", nodes=2, nodes_list="gpu[01-02]")
    make_job(world["bob"], world["vision"], state="RUNNING", nodes_list="gpu02,gpu07")
    make_job(world["bob"], world["vision"], state="COMPLETED", nodes_list="gpu03")
    html = client_for(world["alice"]).get("/nodes/").content.decode()
    jobs_cell = re.compile(r'<td class="num">([^<]+)</td>\s*<td><span class="health')
    counts = {name: jobs_cell.search(row(html, name)).group(1) for name in ("gpu01", "gpu02", "gpu03", "gpu07")}
    assert counts == {"gpu01": "1", "gpu02": "2", "gpu03": "\N{EN DASH}", "gpu07": "1"}


def test_health_shows_ok_findings_and_silence_with_their_age(world):
    report("gpu04", ago_s=3)
    report("gpu05", ago_s=40, findings=[("fatal", "GPU fell off the bus"), ("warning", "hot"), ("info", "x")])
    report("gpu06", ago_s=5 * 60 + 5)
    html = client_for(world["admin"]).get("/nodes/").content.decode()
    assert re.search(r'class="health ok"[^>]*>ok [3-9] s ago<', row(html, "gpu04"))
    assert re.search(r'class="health bad"[^>]*>2 findings 4\d s ago<', row(html, "gpu05"))
    assert re.search(r'class="health warn"[^>]*>no report for 5 min<', row(html, "gpu06"))
    assert "no report yet" in row(html, "gpu07")


def test_the_page_calls_a_node_silent_exactly_when_the_policy_alerts(world, settings):
    # One threshold (PORTAL_HEALTH_STALE_AFTER): the page once used its own 2 minutes against
    # the policy's 5, so a node was "no report for 3 min" with no alert anywhere.
    settings.PORTAL_HEALTH_STALE_AFTER_S = 300
    report("gpu04", ago_s=180)
    report("gpu05", ago_s=320)
    html = client_for(world["admin"]).get("/nodes/").content.decode()
    assert re.search(r'class="health ok"[^>]*>ok 3 min ago<', row(html, "gpu04"))
    assert re.search(r'class="health warn"[^>]*>no report for 5 min<', row(html, "gpu05"))
    now = timezone.now()
    Node.objects.filter(name__in=["gpu04", "gpu05"]).update(last_seen=now)
    assert alert_stale_reports(Thresholds.from_settings(), listed_since=now - timedelta(seconds=1)) == ["gpu05"]


def _shown(client, **query) -> set[str]:
    resp = client.get("/nodes/", query)
    assert resp.status_code == 200
    return {r.node.name for r in resp.context["rows"]}


def test_it_filters_by_partition_state_and_needs_attention(world):
    report("gpu05", ago_s=10, findings=[("fatal", "XID 79")])
    client = client_for(world["alice"])
    assert _shown(client, partition="cpu") == {"cpu01", "cpu02"}
    idle = _idle_gpu_node()
    assert idle in _shown(client, state="idle") and "gpu05" not in _shown(client, state="drained")
    resp = client.get("/nodes/", {"attention": "on"})
    # Only nodes that need a look: gpu05's last report was unclean; a drain elsewhere may add more.
    assert "gpu05" in {r.node.name for r in resp.context["rows"]}
    assert all(r.attention for r in resp.context["rows"]) and f'id="node-{idle}"' not in resp.content.decode()


def test_a_bad_filter_is_a_400_that_still_lists_the_nodes(world):
    resp = client_for(world["alice"]).get("/nodes/", {"state": "exploded"})
    assert resp.status_code == 400
    assert b"Select a valid choice" in resp.content and b'id="node-gpu01"' in resp.content


def test_the_live_partial_is_the_same_table_without_the_page(world):
    client = client_for(world["alice"])
    page = client.get("/nodes/", {"partition": "cpu"}).content.decode()
    rows = client.get("/nodes/rows/", {"partition": "cpu"})
    html = rows.content.decode()
    assert rows.status_code == 200 and "<html" not in html
    assert 'id="node-rows"' in html
    assert 'hx-get="/nodes/rows/?partition=cpu"' in html and "every 3s" in html
    assert row(html, "cpu01") in page and 'id="node-gpu01"' not in html


@pytest.mark.parametrize(("state", "flags", "words"), [
    ("IDLE", [], ("idle", "ok")),
    ("MIXED", [], ("partly used", "info")),
    ("ALLOCATED", [], ("in use", "info")),
    ("MIXED", ["DRAIN"], ("draining", "warn")),
    ("IDLE", ["DRAIN"], ("drained", "bad")),
    ("DOWN", ["DRAIN"], ("down", "bad")),
    ("IDLE", ["NOT_RESPONDING"], ("not responding", "bad")),
    ("ALLOCATED", ["NOT_RESPONDING", "DRAIN"], ("not responding", "bad")),
])
def test_slurm_states_read_as_plain_words(state, flags, words):
    assert state_word(state, flags) == words


def test_gpus_in_use_come_from_slurms_gres_used(world):
    gpu01 = Node.objects.get(name="gpu01")
    live = NodeInfo(name="gpu01", state="MIXED", flags=(), reason="", gres="gpu:h100:4",
                    gres_used="gpu:h100:3(IDX:0-2)", cpus=32, alloc_cpus=3, real_memory_mb=0, partitions=("gpu",))
    shown = present(gpu01, live=live, load=queries.NodeLoad(), problems=0, now=timezone.now())
    assert (shown.word, shown.gpus_used, shown.gpus, shown.gpu_pct) == ("partly used", 3, 4, 75)
