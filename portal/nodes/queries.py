"""Read-only queries behind the node pages: live usage, jobs per node, health summaries, charts.

Nothing here writes; drains and resumes go through portal.nodes.services.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import TruncHour

from portal.jobs.models import Job
from portal.nodes.models import Finding, HealthReport, HealthSummary, Node
from portal.slurm import gateway
from portal.slurm.errors import SlurmError
from portal.slurm.parse import expand_hostlist
from portal.slurm.types import NodeInfo

LIVE_KEY = "nodes:live"
# The pages poll every few seconds per viewer; one Slurm read serves them all for this long.
LIVE_TTL_S = 2
LIVE_DOWN_TTL_S = 10
UNHEALTHY = ("fatal", "warning")
# How far back the detail page looks for jobs that ran on a node, and how many rows it scans.
RECENT_JOBS = timedelta(days=7)
RECENT_SCAN = 500

# ---------------------------------------------------------------- Slurm hostlists

def name_prefix(name: str) -> str:
    """The part of a name Slurm never compresses (before the first digit), for a LIKE pre-filter."""
    match = re.match(r"^[^\d\[]*", name)
    return match.group(0) if match else ""


# ---------------------------------------------------------------- live usage from Slurm

def live_nodes() -> dict[str, NodeInfo] | None:
    """Slurm's current view of every node (state, GPUs in use), or None when Slurm is not answering."""
    cached = cache.get(LIVE_KEY)
    if cached is not None:
        return cached or None
    try:
        nodes = {info.name: info for info in gateway.list_nodes()}
    except SlurmError:
        # Remember the failure too: every poll waiting out Slurm's timeout would stall the pages.
        cache.set(LIVE_KEY, {}, LIVE_DOWN_TTL_S)
        return None
    cache.set(LIVE_KEY, nodes, LIVE_TTL_S)
    return nodes


def forget_live_nodes() -> None:
    """After a drain or resume, so the next page shows the change rather than the cached past."""
    cache.delete(LIVE_KEY)


# ---------------------------------------------------------------- jobs on nodes

@dataclass(frozen=True)
class NodeLoad:
    jobs: int = 0
    gpus: int = 0


def running_load_by_node() -> dict[str, NodeLoad]:
    """Per node: how many RUNNING jobs and how many of their GPUs it holds (multi-node jobs count
    on each node). Summed in PostgreSQL per distinct node list, so each list is expanded once: a
    row per job in Python took ~2.7 s on /nodes/ with 125,000 running jobs."""
    load: dict[str, NodeLoad] = defaultdict(NodeLoad)
    groups = (Job.objects.filter(state="RUNNING").values("nodes_list")
              .annotate(jobs=Count("id"), gpus=Sum("gpus_per_node")).values_list("nodes_list", "jobs", "gpus"))
    for nodes_list, jobs, gpus in groups:
        for name in expand_hostlist(nodes_list):
            here = load[name]
            load[name] = NodeLoad(here.jobs + jobs, here.gpus + (gpus or 0))
    return load


def recent_jobs_on(node: Node, now: datetime, limit: int = 20) -> list[Job]:
    """Jobs that ran on the node in the last week, newest first (running ones included)."""
    since = now - RECENT_JOBS
    candidates = (Job.objects.filter(start_time__gte=since) | Job.objects.filter(state="RUNNING"))
    prefix = name_prefix(node.name)
    if prefix:
        candidates = candidates.filter(nodes_list__contains=prefix)
    found = []
    for job in candidates.select_related("owner").order_by("-start_time", "-id")[:RECENT_SCAN]:
        if node.name in expand_hostlist(job.nodes_list):
            found.append(job)
            if len(found) == limit:
                break
    return found


# ---------------------------------------------------------------- health

def last_report_problems(nodes: list[Node]) -> dict[int, int]:
    """Per node id: how many fatal or warning findings its newest report carried."""
    latest = HealthReport.objects.filter(node=OuterRef("pk")).order_by("-sent_at", "-id").values("pk")[:1]
    report_ids = dict(Node.objects.filter(pk__in=[n.pk for n in nodes])
                      .annotate(report_id=Subquery(latest)).values_list("pk", "report_id"))
    counts = dict(Finding.objects.filter(report_id__in=[r for r in report_ids.values() if r],
                                         severity__in=UNHEALTHY)
                  .values("report_id").annotate(n=Count("id")).values_list("report_id", "n"))
    return {node_id: counts.get(report_id, 0) for node_id, report_id in report_ids.items()}


@dataclass(frozen=True)
class HourBar:
    start: datetime
    fatal: int
    warning: int
    info: int

    @property
    def total(self) -> int:
        return self.fatal + self.warning + self.info


def findings_per_hour(node: Node, now: datetime, hours: int = 24) -> list[HourBar]:
    """Findings in each of the last `hours` hours (the current, partial hour last).

    Raw findings plus the hourly summaries of reports already pruned (portal/nodes/retention.py):
    a report is one or the other, never both, so the sum is exact on either side of the cutoff.
    """
    # Whole UTC hours: the buckets are the same for every viewer whatever their time zone.
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=hours - 1)
    counts: dict[tuple[datetime, str], int] = defaultdict(int)
    rows = (Finding.objects.filter(node=node, sent_at__gte=first).annotate(hour=TruncHour("sent_at", tzinfo=UTC))
            .values("hour", "severity").annotate(n=Count("id")))
    for row in rows:
        counts[(row["hour"], row["severity"])] += row["n"]
    for summary in HealthSummary.objects.filter(node=node, hour__gte=first).only("hour", "fatal", "warning", "info"):
        for severity in ("fatal", "warning", "info"):
            counts[(summary.hour, severity)] += getattr(summary, severity)
    starts = [first + timedelta(hours=i) for i in range(hours)]
    return [HourBar(start, counts[(start, "fatal")], counts[(start, "warning")], counts[(start, "info")])
            for start in starts]
