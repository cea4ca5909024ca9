"""A node's signed report is stored with its findings, moves the node's health, and wakes the policy."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from celery.signals import before_task_publish

from portal.nodes.models import Finding, HealthReport, Node
from slurm_plugins.report import Envelope
from tests.slurm_plugins.signed_reports import body, master_key, send, xid48  # noqa: F401

# Every test gets a private master key for the portal (settings.PORTAL_HEALTH_MASTER_KEY_FILE).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("master_key")]


@pytest.fixture
def published():
    """Names and args of Celery tasks sent to the broker (observed, not replaced)."""
    sent = []

    def record(sender=None, body=None, **_):
        sent.append((sender, body[0] if body else None))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def test_a_report_with_findings_is_stored_and_enqueues_the_policy(published, celery_worker_session,
                                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        resp = send(Envelope(body("gpu01", findings=[xid48(1)], source="prolog", job_id=4242)))
    assert resp.status_code == 202, resp.content
    report = HealthReport.objects.get()
    assert resp.json() == {"accepted": 1, "id": report.pk, "duplicate": False}
    assert (report.node.name, report.source, report.job_id, report.clean, report.late) == \
        ("gpu01", "prolog", 4242, False, False)
    finding = Finding.objects.get()
    assert (finding.check_name, finding.severity, finding.action, finding.gpu, finding.xid, finding.node.name) == \
        ("xid", "fatal", "drain", 1, 48, "gpu01")
    node = Node.objects.get(name="gpu01")
    assert node.last_health_ok is False and node.last_health_at == report.sent_at
    assert published == [("workers.tasks.nodes.apply_node_policy_task", (node.pk,))]


def test_a_clean_run_is_reported_too(celery_worker_session, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        resp = send(Envelope(body("gpu02")), "gpu02")
    report = HealthReport.objects.get(node__name="gpu02")
    assert resp.status_code == 202 and resp.json() == {"accepted": 0, "id": report.pk, "duplicate": False}
    assert report.clean and not report.findings.exists()
    assert Node.objects.get(name="gpu02").last_health_ok is True


def test_info_findings_still_count_as_clean():
    ignored = {"check": "xid", "severity": "info", "action": "ignore", "gpu": 0, "xid": 63, "detail": "Xid 63"}
    assert send(Envelope(body("gpu03", findings=[ignored])), "gpu03").status_code == 202
    assert HealthReport.objects.get().clean


def test_a_spooled_report_older_than_the_window_is_stored_as_late():
    sent = time.time() - 3600
    resp = send(Envelope(body("gpu04", findings=[xid48()], spooled=True, sent_at=sent), timestamp=int(sent)), "gpu04")
    assert resp.status_code == 202, resp.content
    assert HealthReport.objects.get().late is True


def test_a_late_report_does_not_move_the_nodes_health_backwards():
    assert send(Envelope(body("gpu05")), "gpu05").status_code == 202
    fresh = Node.objects.get(name="gpu05").last_health_at
    old = time.time() - 1800
    late = Envelope(body("gpu05", findings=[xid48()], spooled=True, sent_at=old), timestamp=int(old))
    assert send(late, "gpu05").status_code == 202
    node = Node.objects.get(name="gpu05")
    assert node.last_health_at == fresh and node.last_health_ok is True
    assert HealthReport.objects.filter(node=node).count() == 2


def test_a_report_for_a_node_the_portal_has_not_synced_yet_creates_it():
    assert not Node.objects.filter(name="gpu06").exists()
    assert send(Envelope(body("gpu06")), "gpu06").status_code == 202
    assert Node.objects.get(name="gpu06").last_health_at is not None


def test_an_invalid_body_with_a_good_signature_is_422_and_stores_nothing():
    bad = body("gpu01", findings=[{**xid48(), "severity": "catastrophic"}])
    resp = send(Envelope(bad))
    assert resp.status_code == 422 and "severity" in resp.json()["detail"]
    assert not HealthReport.objects.exists()


def test_the_master_key_missing_is_a_503_so_the_node_keeps_its_spool(settings, tmp_path):
    settings.PORTAL_HEALTH_MASTER_KEY_FILE = str(tmp_path / "absent.key")
    resp = send(Envelope(body("gpu01")), key=b"0" * 64)
    assert resp.status_code == 503
    assert not HealthReport.objects.exists()


def test_sent_at_is_the_nodes_time_in_utc():
    sent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    envelope = Envelope(body("gpu01", sent_at=sent.timestamp()), timestamp=int(sent.timestamp()))
    assert send(envelope).status_code == 202
    assert HealthReport.objects.get().sent_at == sent
