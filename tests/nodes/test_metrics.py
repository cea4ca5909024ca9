"""/metrics serves node health in Prometheus' text format: states, findings, automatic actions, report age."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client

from portal.nodes.models import Node, NodeAction
from portal.nodes.services import sync_nodes
from tests.nodes.policy_support import report, xid
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("master_key")]
# One sample line: name{labels} value
SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$')


def scrape() -> str:
    resp = Client().get("/metrics")
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/plain; version=0.0.4")
    return resp.content.decode()


def value(text: str, sample: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(sample + " ")), None)
    assert line is not None, f"{sample} missing from:\n{text}"
    return float(line.rsplit(" ", 1)[1])


def test_every_line_is_valid_prometheus_text(cluster):
    sync_nodes()
    report("gpu03", {**xid(13), "detail": 'quote " and backslash \\ in a detail'})
    for line in scrape().splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or SAMPLE.match(line), line


def test_node_states_and_drains_come_from_the_node_table(cluster):
    sync_nodes()
    Node.objects.filter(name="gpu07").update(flags=["DRAIN"], reason="portal: xid: Xid 79")
    Node.objects.filter(name="gpu06").update(flags=["DRAIN"], reason="fan replacement")
    text = scrape()
    assert value(text, 'portal_node_state{node="cpu02",state="' + Node.objects.get(name="cpu02").state + '"}') == 1
    assert value(text, 'portal_node_flag{node="gpu07",flag="DRAIN"}') == 1
    assert value(text, 'portal_node_drained{node="gpu07",by="portal"}') == 1
    assert value(text, 'portal_node_drained{node="gpu06",by="admin"}') == 1
    assert len([line for line in text.splitlines() if line.startswith("portal_node_drained{")]) == 10


def test_findings_are_counted_by_check_and_severity():
    report("gpu02", xid(48), at=time.time() - 5)
    report("gpu02", xid(13), xid(31))
    text = scrape()
    assert value(text, 'portal_health_findings_total{check="xid",severity="fatal"}') == 1
    assert value(text, 'portal_health_findings_total{check="xid",severity="warning"}') == 2


def test_automatic_and_manual_actions_are_counted_apart():
    node = Node.objects.create(name="gpu08")
    for kind, automatic in [("drain", True), ("resume", True), ("drain", True), ("drain", False), ("alert", True)]:
        NodeAction.objects.create(node=node, kind=kind, automatic=automatic, reason="portal: test")
    text = scrape()
    assert value(text, 'portal_node_actions_total{kind="drain",automatic="true"}') == 2
    assert value(text, 'portal_node_actions_total{kind="drain",automatic="false"}') == 1
    assert value(text, 'portal_node_actions_total{kind="resume",automatic="true"}') == 1
    assert value(text, 'portal_node_actions_total{kind="alert",automatic="true"}') == 1


def test_report_age_is_the_seconds_since_each_nodes_newest_report():
    report("gpu05", at=time.time() - 42)
    report("gpu04")
    text = scrape()
    assert 41 <= value(text, 'portal_node_health_report_age_seconds{node="gpu05"}') < 60
    assert value(text, 'portal_node_health_report_age_seconds{node="gpu04"}') < 15
    assert value(text, 'portal_node_health_ok{node="gpu05"}') == 1
