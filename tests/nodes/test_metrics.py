"""/metrics serves node health in Prometheus' text format: states, findings, automatic actions, report age."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.env import env_networks
from portal.nodes.models import Finding, HealthReport, Node, NodeAction
from portal.nodes.retention import prune_health_reports
from portal.nodes.services import sync_nodes
from portal.recovery import reliability
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


# ---------------------------------------------------------------- cost: O(nodes), not O(findings)

def _scrape_sql() -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        scrape()
    return [q["sql"] for q in queries.captured_queries]


def test_a_scrape_never_reads_the_findings_or_reports_tables(django_assert_max_num_queries, settings):
    # The reliability part of /metrics is a cache read the beat task keeps warm; keep it warm
    # here too, or an entry that expires between the two scrapes adds its recomputation.
    settings.PORTAL_RELIABILITY_CACHE_S = 3600
    reliability.refresh()
    for i in range(3):
        report(f"gpu0{i + 1}", xid(13), xid(31), at=time.time() - 10 + i)
    few = _scrape_sql()
    for i in range(30):
        report("gpu04", xid(13), {**xid(48), "gpu": 1}, at=time.time() - 60 + i)
    with django_assert_max_num_queries(len(few)):
        many = _scrape_sql()
    assert len(many) == len(few)  # more reports, not one query more
    tables = (Finding._meta.db_table, HealthReport._meta.db_table)
    assert [sql for sql in many if any(f'"{table}"' in sql for table in tables)] == []
    text = scrape()
    assert value(text, 'portal_health_findings_total{check="xid",severity="warning"}') == 3 * 2 + 30
    assert value(text, 'portal_health_findings_total{check="xid",severity="fatal"}') == 30


def test_pruning_old_reports_never_lowers_the_findings_counter():
    report("gpu02", xid(48), at=time.time() - 5)
    report("gpu02", xid(13), xid(31))
    prune_health_reports(keep=timedelta(0), now=timezone.now() + timedelta(seconds=1))
    assert not Finding.objects.exists()
    text = scrape()
    assert value(text, 'portal_health_findings_total{check="xid",severity="fatal"}') == 1
    assert value(text, 'portal_health_findings_total{check="xid",severity="warning"}') == 2


# ---------------------------------------------------------------- who may read it

def get(remote: str = "127.0.0.1", token: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return Client().get("/metrics", REMOTE_ADDR=remote, **headers)


def test_only_this_host_may_read_it_by_default():
    assert get("127.0.0.1").status_code == 200
    assert get("::1").status_code == 200
    refused = get("10.1.2.3")
    assert refused.status_code == 403 and b"PORTAL_METRICS_ALLOW" in refused.content
    assert b"portal_node" not in refused.content


def test_an_allow_list_admits_its_networks(settings):
    settings.PORTAL_METRICS_ALLOW = env_networks("X_UNSET_FOR_TEST", "10.0.0.0/8")
    assert get("10.1.2.3").status_code == 200
    assert get("192.168.1.1").status_code == 403
    assert get("127.0.0.1").status_code == 403


@pytest.mark.parametrize("source", ["env", "file"])
def test_a_bearer_token_admits_a_scraper_from_anywhere(settings, tmp_path, source):
    if source == "env":
        settings.PORTAL_METRICS_TOKEN = "s3cret-metrics-token"
    else:
        path = tmp_path / "metrics.token"
        path.write_text("s3cret-metrics-token\n")
        settings.PORTAL_METRICS_TOKEN_FILE = str(path)
    assert get("10.1.2.3", token="s3cret-metrics-token").status_code == 200
    missing = get("10.1.2.3")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert get("10.1.2.3", token="wrong").status_code == 401
    assert get("127.0.0.1", token="wrong").status_code == 401  # a wrong token is never let through
