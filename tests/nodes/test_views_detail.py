"""A node's page: live state, findings per hour, finding and drain history, jobs that ran there."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.nodes.models import Finding, HealthReport, Node, NodeAction
from portal.nodes.services import sync_nodes
from tests.jobs.views_support import build_world, client_for, make_job

pytestmark = pytest.mark.django_db

XSS = '<script>alert("pwned")</script>'
ESCAPED = "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"


@pytest.fixture
def world(make_user, cluster):
    sync_nodes()
    return build_world(make_user)


def finding(node_name: str, *, ago_s: float, severity: str = "fatal", detail: str = "", xid: int | None = 79,
            gpu: int | None = 2, check: str = "xid") -> Finding:
    node = Node.objects.get(name=node_name)
    sent = timezone.now() - timedelta(seconds=ago_s)
    rep = HealthReport.objects.create(node=node, source="healthcheck", sent_at=sent, received_at=sent,
                                      nonce=f"{node_name}-{sent.timestamp()}-{check}", clean=severity == "info")
    Node.objects.filter(pk=node.pk).update(last_health_at=sent, last_health_ok=severity == "info")
    return Finding.objects.create(report=rep, node=node, check_name=check, severity=severity, action="drain",
                                  gpu=gpu, xid=xid, detail=detail, sent_at=sent)


def test_findings_are_listed_with_check_severity_gpu_xid_and_escaped_detail(world):
    finding("gpu03", ago_s=30, detail=XSS)
    finding("gpu03", ago_s=90 * 60, severity="warning", check="ecc", xid=None, gpu=None, detail="1 corrected")
    resp = client_for(world["admin"]).get("/nodes/gpu03/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert XSS not in html and ESCAPED in html
    assert '<td class="mono">xid</td>' in html
    assert '<td class="num">79</td>' in html and '<td class="num">2</td>' in html  # XID and GPU
    assert '<td class="mono">ecc</td>' in html and 'class="badge warn">warning<' in html
    assert ">Drain<" in html  # the sensor's recommended action


def test_the_chart_counts_findings_per_hour(world):
    for ago in (60, 120, 180):
        finding("gpu03", ago_s=ago)
    finding("gpu03", ago_s=3 * 3600, severity="warning")
    finding("gpu03", ago_s=30 * 3600)  # older than the chart's day
    html = client_for(world["alice"]).get("/nodes/gpu03/").content.decode()
    assert "4 in total" in html
    assert html.count('class="hour"') == 24
    hours = re.findall(r"finding.? \((\d+) fatal, (\d+) warning, (\d+) info\)", html)
    assert [sum(int(h[i]) for h in hours) for i in range(3)] == [3, 1, 0]
    assert 'class="bad" style="height: 100%"' in html  # the busiest hour fills the chart


def test_drain_history_names_the_person_or_the_health_policy(world):
    gpu04 = Node.objects.get(name="gpu04")
    NodeAction.objects.create(node=gpu04, kind="drain", automatic=True, reason="portal: XID 79 on GPU 2")
    NodeAction.objects.create(node=gpu04, kind="resume", actor=world["admin"], reason="GPU reseated")
    NodeAction.objects.create(node=gpu04, kind="drain", actor=world["admin"], reason=XSS, ok=False,
                              detail="Slurm refused: Invalid node name")
    html = client_for(world["alice"]).get("/nodes/gpu04/").content.decode()
    history = html[html.index('id="node-history"'):html.index('id="node-jobs"')]
    assert 'badge neutral">health policy<' in history and "portal: XID 79 on GPU 2" in history
    assert "<td>admin</td>" in history and "GPU reseated" in history
    assert 'badge bad">failed<' in history and "Invalid node name" in history
    assert XSS not in html and ESCAPED in history


def test_jobs_on_the_node_link_only_where_the_viewer_may_look(world):
    mine = make_job(world["alice"], world["vision"], name="alice-train", nodes_list="gpu[03-04]")
    theirs = make_job(world["erin"], world["nlp"], name="erin-secret", nodes_list="gpu04", slurm_job_id=4242)
    make_job(world["alice"], world["vision"], name="elsewhere", nodes_list="gpu[05-06]")
    old = timezone.now() - timedelta(days=30)
    make_job(world["alice"], world["vision"], name="long-ago", nodes_list="gpu04", state="COMPLETED",
             start_time=old, end_time=old)
    html = client_for(world["alice"]).get("/nodes/gpu04/").content.decode()
    assert f'href="/jobs/{mine.pk}/">alice-train<' in html
    assert "erin-secret" not in html and f"/jobs/{theirs.pk}/" not in html
    assert "another user's job · Slurm 4242" in html
    assert "elsewhere" not in html and "long-ago" not in html
    admin_html = client_for(world["admin"]).get("/nodes/gpu04/").content.decode()
    assert f'href="/jobs/{theirs.pk}/">erin-secret<' in admin_html


def test_a_researcher_sees_the_page_without_drain_or_resume(world):
    html = client_for(world["alice"]).get("/nodes/gpu01/").content.decode()
    word, _ = Node.objects.get(name="gpu01").state_label   # as Slurm holds it now: jobs may run there
    assert f'id="node-state">{word}<' in html
    assert "/nodes/gpu01/drain/" not in html and "/nodes/gpu01/resume/" not in html
    admin_html = client_for(world["admin"]).get("/nodes/gpu01/").content.decode()
    assert 'formaction="/nodes/gpu01/drain/"' in admin_html and 'formaction="/nodes/gpu01/resume/"' in admin_html


@pytest.mark.parametrize("path", ["/nodes/gpu99/", "/nodes/gpu99/status/", "/nodes/no$such/",
                                  "/nodes/%3Cscript%3E/", f"/nodes/{'a' * 65}/", "/nodes/gpu01%00/status/"])
def test_unknown_or_malformed_nodes_are_404(world, path):
    assert client_for(world["admin"]).get(path).status_code == 404


def test_the_live_partial_renders_the_status_alone(world):
    finding("gpu02", ago_s=5, detail=XSS)
    resp = client_for(world["alice"]).get("/nodes/gpu02/status/")
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html
    assert 'id="node-status" hx-get="/nodes/gpu02/status/"' in html and "every 3s" in html
    assert ESCAPED in html and XSS not in html
    assert 'health bad">health: 1 finding' in html
