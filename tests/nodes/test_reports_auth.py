"""Unsigned, forged, stale and replayed reports are refused, logged, and store nothing."""

from __future__ import annotations

import logging
import time

import pytest
from django.core.management import CommandError, call_command

from portal.nodes.models import HealthReport, Node
from slurm_plugins.report import Envelope
from tests.slurm_plugins.helpers import CLUSTER_STATE, node_key_file
from tests.slurm_plugins.signed_reports import URL, body, key_for, master_key, send, xid48  # noqa: F401

# Every test gets a private master key for the portal (settings.PORTAL_HEALTH_MASTER_KEY_FILE).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("master_key")]


def rejected(resp, status: int, caplog, reason: str) -> None:
    assert resp.status_code == status, resp.content
    assert not HealthReport.objects.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "portal.nodes.reports"]
    assert any("node=gpu01" in w and reason in w for w in warnings), warnings


def test_an_unsigned_report_is_refused(client, caplog):
    resp = client.post(URL.format("gpu01"), data=Envelope(body()).raw(), content_type="application/json")
    rejected(resp, 401, caplog, "unsigned")


def test_a_forged_signature_is_refused(caplog):
    envelope = Envelope(body(findings=[xid48()]))
    resp = send(envelope, headers={"X-Health-Signature": "ab" * 32})
    rejected(resp, 401, caplog, "bad signature")


def test_a_body_changed_after_signing_is_refused(caplog):
    envelope = Envelope(body(findings=[xid48()]))
    tampered = envelope.raw().replace(b'"fatal"', b'"info"')
    rejected(send(envelope, raw=tampered), 401, caplog, "bad signature")


def test_another_nodes_key_is_refused(caplog):
    """gpu02's key cannot speak for gpu01 (a compromised node cannot drain its neighbours)."""
    rejected(send(Envelope(body("gpu01")), "gpu01", key=key_for("gpu02")), 401, caplog, "bad signature")


def test_a_report_naming_another_node_is_refused(caplog):
    rejected(send(Envelope(body("gpu02")), "gpu01"), 403, caplog, "names node 'gpu02'")


def test_a_stale_timestamp_is_refused(caplog):
    old = int(time.time()) - 1000
    rejected(send(Envelope(body(sent_at=old), timestamp=old)), 403, caplog, "stale timestamp")


def test_a_timestamp_from_the_future_is_refused(caplog):
    ahead = int(time.time()) + 1000
    rejected(send(Envelope(body(), timestamp=ahead)), 403, caplog, "in the future")


def test_a_spooled_report_too_old_is_refused(settings, caplog):
    settings.PORTAL_HEALTH_MAX_SPOOL_AGE_S = 3600
    old = int(time.time()) - 7200
    rejected(send(Envelope(body(spooled=True, sent_at=old), timestamp=old)), 403, caplog, "too old")


def test_another_report_under_a_seen_nonce_is_refused_and_stored_once(caplog):
    """A resend of the same report is answered (tests/nodes/test_reports_resend.py); a different
    body, even signed by the node itself, under a nonce already used is a replay."""
    first = Envelope(body(findings=[xid48()]))
    assert send(first).status_code == 202
    other = Envelope(body(), timestamp=first.timestamp, nonce=first.nonce)
    assert send(other).status_code == 403
    assert HealthReport.objects.count() == 1
    assert HealthReport.objects.get().clean is False
    assert any("replayed nonce" in r.getMessage() and "node=gpu01" in r.getMessage() for r in caplog.records)


def test_a_late_replay_with_other_findings_is_refused():
    old = int(time.time()) - 3600
    first = Envelope(body(spooled=True, sent_at=old), timestamp=old)
    assert send(first).status_code == 202
    other = Envelope(body(findings=[xid48()], spooled=True, sent_at=old), timestamp=old, nonce=first.nonce)
    assert send(other).status_code == 403
    assert HealthReport.objects.count() == 1


def test_a_malformed_node_name_is_not_found(client):
    resp = client.post("/api/v1/nodes/gpu%2001/health", data=b"{}", content_type="application/json")
    assert resp.status_code == 404
    assert not Node.objects.exists()


def test_node_key_prints_the_key_ctl_installed_on_the_node(cluster, settings, capsys):
    """The same derivation on both sides: what `manage.py node_key` prints is what ctl wrote."""
    settings.PORTAL_HEALTH_MASTER_KEY_FILE = str(CLUSTER_STATE / "etc/health-master.key")
    call_command("node_key", "gpu03")
    assert capsys.readouterr().out.strip() == node_key_file("gpu03").read_text().strip()


def test_node_key_refuses_a_bad_node_name():
    with pytest.raises(CommandError, match="not a valid node name"):
        call_command("node_key", "../etc")
