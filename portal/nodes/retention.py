"""Health report retention: raw reports for PORTAL_HEALTH_KEEP_DAYS, then one summary row per
node and UTC hour (HealthSummary) for PORTAL_HEALTH_SUMMARY_KEEP_DAYS.

The sensors send about 290,000 reports a day on the demo cluster, so the raw table cannot keep
everything. A periodic task (workers.tasks.nodes.prune_health_reports_task) folds the oldest
reports into their hour's summary and deletes them in the same short transaction, a batch at a
time, with a bounded number of batches and seconds per run: no long lock, no long stall of the
worker, and the backlog shrinks run by run (about 4,000 reports a second here). A report is
either raw or summarised, never both, so raw + summary counts are always exact (the node
page's chart adds them), and running the task twice counts nothing twice.

Raw reports are kept by the time they were *received*, at least as long as a spooled replay may
be accepted (PORTAL_HEALTH_MAX_SPOOL_AGE): the stored nonce is what refuses a replay.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from portal.nodes.models import Finding, HealthReport, HealthSummary

SEVERITY_RANK = {"": 0, "info": 1, "warning": 2, "fatal": 3}
FAILED = ("fatal", "warning")
# Any constant: one pruner at a time, so two never create the same hour's summary at once.
LOCK_ID = 0x6865616C7468  # "health"


@dataclass
class Bucket:
    reports: int = 0
    clean_reports: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"fatal": 0, "warning": 0, "info": 0})
    checks_failed: set[str] = field(default_factory=set)

    @property
    def worst(self) -> str:
        return max((s for s, n in self.counts.items() if n), key=SEVERITY_RANK.__getitem__, default="")


@dataclass(frozen=True)
class PruneResult:
    summarised: int          # raw reports folded into summaries and deleted
    summaries_deleted: int   # summaries past their own retention
    more: bool               # the run stopped at its batch limit with old reports left


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _fold(reports: list[tuple[int, int, datetime, bool]], findings: list[tuple[int, str, str]]
          ) -> dict[tuple[int, datetime], Bucket]:
    buckets: dict[tuple[int, datetime], Bucket] = defaultdict(Bucket)
    key_of = {}
    for report_id, node_id, sent_at, clean in reports:
        key_of[report_id] = (node_id, hour_of(sent_at))
        bucket = buckets[key_of[report_id]]
        bucket.reports += 1
        bucket.clean_reports += clean
    for report_id, severity, check in findings:
        bucket = buckets[key_of[report_id]]
        bucket.counts[severity] = bucket.counts.get(severity, 0) + 1
        if severity in FAILED:
            bucket.checks_failed.add(check)
    return buckets


def _apply(summary: HealthSummary, bucket: Bucket) -> HealthSummary:
    summary.reports += bucket.reports
    summary.clean_reports += bucket.clean_reports
    summary.fatal += bucket.counts["fatal"]
    summary.warning += bucket.counts["warning"]
    summary.info += bucket.counts["info"]
    summary.worst = max(summary.worst, bucket.worst, key=SEVERITY_RANK.__getitem__)
    summary.checks_failed = sorted(set(summary.checks_failed) | bucket.checks_failed)
    return summary


def _merge(buckets: dict[tuple[int, datetime], Bucket]) -> None:
    """Add the buckets to their summaries: existing rows updated, missing ones created."""
    nodes, hours = {node for node, _ in buckets}, {hour for _, hour in buckets}
    candidates = HealthSummary.objects.select_for_update().filter(node_id__in=nodes, hour__in=hours)
    existing = {(s.node_id, s.hour): s for s in candidates if (s.node_id, s.hour) in buckets}
    changed = [_apply(existing[key], bucket) for key, bucket in buckets.items() if key in existing]
    created = [_apply(HealthSummary(node_id=key[0], hour=key[1]), bucket)
               for key, bucket in buckets.items() if key not in existing]
    HealthSummary.objects.bulk_update(changed, ["reports", "clean_reports", "fatal", "warning", "info", "worst",
                                                "checks_failed"])
    HealthSummary.objects.bulk_create(created)


def _locked() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_ID])
        return cursor.fetchone()[0]


def summarise_batch(received_before: datetime, size: int) -> int:
    """Fold up to `size` of the oldest reports received before the cutoff into their summaries
    and delete them, in one short transaction. How many were folded (0: none left, or another
    pruner is at work)."""
    with transaction.atomic():
        if not _locked():
            return 0
        reports = list(HealthReport.objects.filter(received_at__lt=received_before).order_by("received_at")
                       .values_list("id", "node_id", "sent_at", "clean")[:size])
        if not reports:
            return 0
        ids = [r[0] for r in reports]
        findings = list(Finding.objects.filter(report_id__in=ids).values_list("report_id", "severity", "check_name"))
        _merge(_fold(reports, findings))
        Finding.objects.filter(report_id__in=ids).delete()
        HealthReport.objects.filter(id__in=ids).delete()
    return len(reports)


def prune_health_reports(*, now: datetime | None = None, keep: timedelta | None = None,
                         keep_summaries: timedelta | None = None, batch: int | None = None,
                         max_batches: int | None = None, budget_s: float | None = None) -> PruneResult:
    """Summarise and delete raw reports older than `keep`, and summaries older than `keep_summaries`
    (both from settings by default). At most max_batches x batch reports per run, and no new
    batch after budget_s seconds: the worker that runs this also runs the job tracker."""
    now = now or timezone.now()
    deadline = time.monotonic() + (settings.PORTAL_HEALTH_PRUNE_BUDGET_S if budget_s is None else budget_s)
    keep = keep if keep is not None else timedelta(days=settings.PORTAL_HEALTH_KEEP_DAYS)
    keep_summaries = keep_summaries or timedelta(days=settings.PORTAL_HEALTH_SUMMARY_KEEP_DAYS)
    batch = batch or settings.PORTAL_HEALTH_PRUNE_BATCH
    max_batches = max_batches or settings.PORTAL_HEALTH_PRUNE_MAX_BATCHES
    summarised, more = 0, False
    for _ in range(max_batches):
        done = summarise_batch(now - keep, batch)
        summarised += done
        more = done == batch
        if not more or time.monotonic() > deadline:
            break
    deleted, _ = HealthSummary.objects.filter(hour__lt=hour_of(now - keep_summaries)).delete()
    return PruneResult(summarised=summarised, summaries_deleted=deleted, more=more)
