"""Health report retention: old raw reports become hourly summaries, and only they are deleted."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from portal.nodes.models import Finding, HealthReport, HealthSummary, Node
from portal.nodes.queries import findings_per_hour
from portal.nodes.retention import hour_of, prune_health_reports
from workers.tasks.nodes import prune_health_reports_task

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
_seq = iter(range(10**6))


def stored(node: Node, *, days_ago: float, findings: tuple[tuple[str, str], ...] = ()) -> HealthReport:
    """A report as intake stores it, sent and received `days_ago` before NOW."""
    at = NOW - timedelta(days=days_ago)
    clean = not any(severity in ("fatal", "warning") for severity, _ in findings)
    report = HealthReport.objects.create(node=node, source="healthcheck", sent_at=at, received_at=at,
                                         nonce=f"{next(_seq):032x}", clean=clean)
    Finding.objects.bulk_create([Finding(report=report, node=node, check_name=check, severity=severity,
                                         action="none", sent_at=at) for severity, check in findings])
    return report


@pytest.fixture
def history():
    """Two nodes: a mix of clean and unclean reports 8-9 days old (prunable) and 1 day old (kept)."""
    a, b = Node.objects.create(name="gpu01"), Node.objects.create(name="gpu02")
    for i in range(6):
        stored(a, days_ago=9 + i / 100)  # clean, all in one hour
    stored(a, days_ago=9, findings=(("fatal", "xid"), ("warning", "temperature"), ("info", "xid")))
    stored(a, days_ago=9.01, findings=(("warning", "temperature"),))
    stored(a, days_ago=8, findings=(("info", "xid"),))
    stored(b, days_ago=8.5, findings=(("warning", "nvlink"), ("warning", "ecc")))
    recent = [stored(a, days_ago=1, findings=(("fatal", "ecc"),)), stored(b, days_ago=0.5)]
    return a, b, recent


def raw_summary() -> dict:
    """What the summaries must say, counted from the raw rows older than 7 days before pruning."""
    cutoff = NOW - timedelta(days=7)
    expected: dict = {}
    for report in HealthReport.objects.filter(received_at__lt=cutoff).prefetch_related("findings"):
        row = expected.setdefault((report.node_id, hour_of(report.sent_at)),
                                  {"reports": 0, "clean": 0, "sev": Counter(), "checks": set()})
        row["reports"] += 1
        row["clean"] += report.clean
        for f in report.findings.all():
            row["sev"][f.severity] += 1
            if f.severity in ("fatal", "warning"):
                row["checks"].add(f.check_name)
    return expected


def summaries() -> dict:
    return {(s.node_id, s.hour): {"reports": s.reports, "clean": s.clean_reports,
                                  "sev": Counter({k: v for k, v in (("fatal", s.fatal), ("warning", s.warning),
                                                                    ("info", s.info)) if v}),
                                  "checks": set(s.checks_failed), "worst": s.worst}
            for s in HealthSummary.objects.all()}


def test_old_reports_become_summaries_that_match_their_raw_counts(history):
    _, _, recent = history
    expected = raw_summary()
    result = prune_health_reports(now=NOW)
    assert result.summarised == 10 and not result.more
    got = summaries()
    assert {k: {key: v[key] for key in ("reports", "clean", "sev", "checks")} for k, v in got.items()} == expected
    rank = ["", "info", "warning", "fatal"]
    assert all(v["worst"] == max(v["sev"], key=rank.index, default="") for v in got.values())
    assert sorted(v["worst"] for v in got.values()).count("fatal") == 1
    # Recent reports (and their findings) untouched; every old one gone.
    assert set(HealthReport.objects.values_list("pk", flat=True)) == {r.pk for r in recent}
    assert Finding.objects.count() == 1


def test_a_second_run_changes_nothing(history):
    prune_health_reports(now=NOW)
    before = summaries()
    result = prune_health_reports(now=NOW)
    assert (result.summarised, result.summaries_deleted) == (0, 0)
    assert summaries() == before


def test_work_per_run_is_bounded_and_batches_add_up(history):
    expected = raw_summary()
    first = prune_health_reports(now=NOW, batch=3, max_batches=2)
    assert (first.summarised, first.more) == (6, True)
    assert HealthReport.objects.filter(received_at__lt=NOW - timedelta(days=7)).count() == 4
    spent = prune_health_reports(now=NOW, batch=3, max_batches=10, budget_s=0)  # out of time after one batch
    assert (spent.summarised, spent.more) == (3, True)
    second = prune_health_reports(now=NOW, batch=3, max_batches=2)
    assert (second.summarised, second.more) == (1, False)
    got = summaries()
    assert {k: {key: v[key] for key in ("reports", "clean", "sev", "checks")} for k, v in got.items()} == expected


def test_summaries_expire_after_their_own_retention(history):
    a, _, _ = history
    HealthSummary.objects.create(node=a, hour=hour_of(NOW - timedelta(days=401)), reports=5)
    kept = HealthSummary.objects.create(node=a, hour=hour_of(NOW - timedelta(days=399)), reports=5)
    result = prune_health_reports(now=NOW)
    assert result.summaries_deleted == 1
    assert HealthSummary.objects.filter(pk=kept.pk).exists()


def test_the_findings_chart_reads_summaries_where_raw_rows_are_gone(history):
    a, _, _ = history
    chart_at = NOW - timedelta(days=8) + timedelta(hours=1)  # two days ending just after the 8-day-old report
    before = findings_per_hour(a, chart_at, hours=48)
    assert sum(bar.total for bar in before) == 5
    assert sum(bar.fatal for bar in before) == 1 and sum(bar.warning for bar in before) == 2
    prune_health_reports(now=NOW)
    assert not Finding.objects.filter(node=a, sent_at__lt=NOW - timedelta(days=7)).exists()
    assert findings_per_hour(a, chart_at, hours=48) == before


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_prunes_through_the_real_worker(celery_settled):
    assert settings.CELERY_BEAT_SCHEDULE["prune-health-reports"]["task"] == prune_health_reports_task.name
    node = Node.objects.create(name="gpu03")
    now = timezone.now()
    old = HealthReport.objects.create(node=node, source="healthcheck", sent_at=now - timedelta(days=30),
                                      received_at=now - timedelta(days=30), nonce="ab" * 16, clean=True)
    fresh = HealthReport.objects.create(node=node, source="healthcheck", sent_at=now, received_at=now,
                                        nonce="cd" * 16, clean=True)
    result = prune_health_reports_task.delay().get(timeout=30)
    assert result["summarised"] == 1
    assert list(HealthReport.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert HealthSummary.objects.get(node=node).reports == 1 and old.pk != fresh.pk
