"""Intake of node health reports: check who sent it, refuse replays, store it, wake the policy.

What the portal decides about a node (drain, resume, lemons) happens later, in
workers.tasks.nodes.apply_node_policy_task, which every stored report enqueues. A rejected
report stores nothing and is logged (WARNING) with the node and the reason.

A sensor whose answer was lost (it gave up waiting) resends the same report with the same
nonce, marked as spooled: that is answered with the stored report, not refused. Anything
else under a seen nonce is a replay and refused.

The hand-off to the policy task never waits on the broker for long (portal.infra.handoff):
with the broker down the report is stored all the same, and the periodic node check
(check_nodes_task, every 10 s) decides for every node from the stored reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from portal.infra.handoff import hand_off
from portal.nodes import metrics, signing
from portal.nodes.models import Finding, HealthReport, Node

log = logging.getLogger(__name__)
# Severities that make a report "not clean"; info findings (an ignored XID) do not.
UNHEALTHY = {"fatal", "warning"}
# Sent by name: the workers package imports this app, so importing its task would be a cycle.
POLICY_TASK = "workers.tasks.nodes.apply_node_policy_task"


class ReportRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Recorded:
    report: HealthReport
    duplicate: bool = False   # True: a resend of a report already stored (nothing new stored)


@dataclass(frozen=True)
class FindingData:
    check: str
    severity: str
    action: str
    gpu: int | None
    xid: int | None
    detail: str


@dataclass(frozen=True)
class ReportData:
    node: str
    source: str
    sent_at: datetime
    job_id: int | None
    findings: tuple[FindingData, ...]
    spooled: bool


def _reject(node_name: str, status: int, reason: str, remote: str) -> ReportRejected:
    log.warning("health report rejected: node=%s reason=%s remote=%s", node_name, reason, remote or "?")
    return ReportRejected(status, reason)


def check_signature(*, node_name: str, timestamp: str, nonce: str, signature: str, body: bytes,
                    remote: str = "") -> int:
    """The report's timestamp if the node's key signed exactly this body; 401 otherwise.

    Raises signing.MasterKeyMissing when the portal cannot check anything (a 503: the node
    keeps its report spooled until the portal is fixed).
    """
    if not (timestamp and nonce and signature):
        raise _reject(node_name, 401, "unsigned (X-Health-Timestamp, -Nonce and -Signature are required)", remote)
    if not timestamp.isdigit() or not signing.NONCE_RE.match(nonce) or not signing.SIGNATURE_RE.match(signature):
        raise _reject(node_name, 401, "malformed signature headers", remote)
    if not signing.signature_ok(node_name, timestamp, nonce, body, signature):
        raise _reject(node_name, 401, "bad signature", remote)
    return int(timestamp)


def _check_freshness(node_name: str, report: ReportData, timestamp: int, now: datetime, remote: str) -> bool:
    """True when the report is late: a spooled replay older than the window. Refuses
    timestamps from the future, and old ones that are not replays from the spool."""
    age = now.timestamp() - timestamp
    skew = settings.PORTAL_HEALTH_MAX_SKEW_S
    if age < -skew or (report.sent_at - now).total_seconds() > skew:
        raise _reject(node_name, 403, f"timestamp {timestamp} is in the future (node clock?)", remote)
    if age <= skew:
        return False
    if not report.spooled:
        raise _reject(node_name, 403, f"stale timestamp ({age:.0f} s old)", remote)
    if age > settings.PORTAL_HEALTH_MAX_SPOOL_AGE_S:
        raise _reject(node_name, 403, f"spooled report too old ({age:.0f} s)", remote)
    return True


def _store(node: Node, report: ReportData, nonce: str, late: bool, now: datetime) -> HealthReport:
    clean = not any(f.severity in UNHEALTHY for f in report.findings)
    row = HealthReport.objects.create(node=node, source=report.source, sent_at=report.sent_at, received_at=now,
                                      nonce=nonce, job_id=report.job_id, clean=clean, late=late)
    Finding.objects.bulk_create([
        Finding(report=row, node=node, check_name=f.check, severity=f.severity, action=f.action, gpu=f.gpu,
                xid=f.xid, detail=f.detail, sent_at=report.sent_at)
        for f in report.findings])
    metrics.add_finding_counts(node.pk, ((f.check, f.severity) for f in report.findings))
    # Only a newer report moves the node's health; a late replay describes the past.
    Node.objects.filter(pk=node.pk).filter(Q(last_health_at__isnull=True) | Q(last_health_at__lt=report.sent_at)) \
        .update(last_health_at=report.sent_at, last_health_ok=clean)
    return row


def _enqueue_policy(node_id: int) -> None:
    hand_off(POLICY_TASK, node_id)


def _content(node_name: str, source: str, sent_at: datetime, job_id: int | None,
             findings: list[tuple]) -> tuple:
    return node_name, source, sent_at, job_id, sorted(findings, key=repr)


def _resent(nonce: str, node_name: str, report: ReportData, remote: str) -> Recorded:
    """The stored report under `nonce` when this is the same report again; 403 otherwise.

    Compared without `spooled`: the sensor marks the report spooled when it keeps it for a
    resend, and a signed body cannot come from anyone but the node itself."""
    stored = HealthReport.objects.select_related("node").get(nonce=nonce)
    findings = list(stored.findings.values_list("check_name", "severity", "action", "gpu", "xid", "detail"))
    then = _content(stored.node.name, stored.source, stored.sent_at, stored.job_id, findings)
    now = _content(node_name, report.source, report.sent_at, report.job_id,
                   [(f.check, f.severity, f.action, f.gpu, f.xid, f.detail) for f in report.findings])
    if then != now:
        raise _reject(node_name, 403, "replayed nonce", remote)
    log.info("health report resent: node=%s report=%s (already stored)", node_name, stored.pk)
    return Recorded(stored, duplicate=True)


def record_health_report(*, node_name: str, report: ReportData, timestamp: int, nonce: str,
                         remote: str = "", now: datetime | None = None) -> Recorded:
    """Store a report whose signature check_signature() accepted. Refuses (403) a report for
    another node, a stale or future timestamp and a nonce seen before with another report."""
    now = now or timezone.now()
    if report.node != node_name:
        raise _reject(node_name, 403, f"report names node {report.node!r}", remote)
    late = _check_freshness(node_name, report, timestamp, now, remote)
    if HealthReport.objects.filter(nonce=nonce).exists():
        return _resent(nonce, node_name, report, remote)
    with transaction.atomic():
        node, _ = Node.objects.get_or_create(name=node_name)
        try:
            with transaction.atomic():
                row = _store(node, report, nonce, late, now)
        except IntegrityError:
            # The same nonce arrived twice at once; the unique nonce let only one in.
            return _resent(nonce, node_name, report, remote)
        # robust: a stored report must not turn into an error the node would retry.
        transaction.on_commit(lambda: _enqueue_policy(node.pk), robust=True)
    return Recorded(row)
