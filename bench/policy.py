"""Benchmark: the health policy's decision pass over 10,000 nodes (target <= 1 s).

Seeds a database of its own (PORTAL_DB_NAME, default portal_bench_policy) once with 10,000 nodes
(partition `bench`) and an hour of health checks behind each, as the 3 s check leaves them:
1,200 reports a node, 12,000,000 rows (the newest 20 carry the findings; the rest are clean and
made in one INSERT ... SELECT). Findings on some: 1% of nodes with a fatal XID, 3% with soft XIDs, 2% with a
repeated temperature warning, 1% drained by the portal and healthy again; and 2,000 failed jobs
spread over the nodes. Then times `decide_all` (what the periodic check runs: load the evidence
in four queries and decide for every node; no Slurm call) 10 times and prints the figures.

    .venv/bin/python bench/policy.py
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import ensure_database, machine, percentile, summary_ms  # noqa: E402

DB = os.environ.setdefault("PORTAL_DB_NAME", "portal_bench_policy")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
# The policy runs in the Celery worker, with the worker's statement timeout (scripts/portal.sh);
# seeding 12 million reports needs none.
os.environ.setdefault("PORTAL_DB_STATEMENT_TIMEOUT", "0")
ensure_database(DB)
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from portal.jobs.models import Job  # noqa: E402
from portal.nodes import policy  # noqa: E402
from portal.nodes.models import Finding, HealthReport, Node  # noqa: E402
from portal.nodes.policy import Thresholds, decide, decide_all, load_evidence  # noqa: E402
from portal.teams.models import Team  # noqa: E402

NODES = 10_000
REPORTS_PER_NODE = 20          # the newest reports, where the findings are
HISTORY_S = 3600               # an hour of clean checks behind them (the lemon window)
CHECK_EVERY_S = 3
FAILED_JOBS = 2_000
RUNS = 10
PREFIX = "bn"


def _finding(report: HealthReport, node: Node, kind: str) -> Finding:
    spec = {
        "fatal": ("xid", "fatal", "drain", 48, "Xid 48 on GPU 1: double-bit ECC error"),
        "soft": ("xid", "warning", "none", 13, "Xid 13 on GPU 0: graphics engine exception"),
        "hot": ("temperature", "warning", "none", None, "GPU 2 at 87 C"),
    }[kind]
    return Finding(report=report, node=node, check_name=spec[0], severity=spec[1], action=spec[2], xid=spec[3],
                   gpu=0, detail=spec[4], sent_at=report.sent_at)


def _profile(i: int) -> str:
    """Which kind of node i is: mostly healthy, a few faulty in each way the policy knows."""
    return {0: "fatal", 1: "soft", 2: "soft", 3: "soft", 4: "hot", 5: "hot", 6: "healed"}.get(i % 100, "healthy")


def _nodes() -> list[Node]:
    rows = []
    for i in range(NODES):
        healed = _profile(i) == "healed"
        rows.append(Node(name=f"{PREFIX}{i:05d}", state="IDLE", flags=["DRAIN"] if healed else [],
                         reason="portal: xid: Xid 79 on GPU 0" if healed else "", partitions=["bench"],
                         gres="gpu:h100:8", gpus=8, cpus=128))
    return Node.objects.bulk_create(rows, batch_size=2000)


def _reports(nodes: list[Node]) -> None:
    now = timezone.now()
    for start in range(0, len(nodes), 1000):
        reports, kinds = [], []
        for i, node in enumerate(nodes[start:start + 1000], start):
            profile = _profile(i)
            for k in range(REPORTS_PER_NODE):
                kind = _report_kind(profile, k)
                reports.append(HealthReport(node=node, source="healthcheck", sent_at=now - timedelta(seconds=3 * k),
                                            received_at=now, nonce=uuid.uuid4().hex, clean=kind is None))
                kinds.append(kind)
        HealthReport.objects.bulk_create(reports, batch_size=5000)
        Finding.objects.bulk_create([_finding(r, r.node, kind) for r, kind in zip(reports, kinds, strict=True) if kind],
                                    batch_size=5000)


def _report_kind(profile: str, k: int) -> str | None:
    """The finding in a node's k-th newest report (None: clean)."""
    if profile == "fatal" and k == 1:
        return "fatal"
    if profile == "soft" and k in (2, 9, 15):
        return "soft"
    if profile == "hot" and k % 3 == 0:
        return "hot"
    if profile == "healed" and k >= 5:
        return "fatal"
    return None


def _history() -> int:
    """Clean reports from REPORTS_PER_NODE checks back to an hour ago, for every bench node."""
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO nodes_healthreport (node_id, source, sent_at, received_at, nonce, clean, late)
               SELECT n.id, 'healthcheck', now() - k * %(every)s * interval '1 second',
                      now() - k * %(every)s * interval '1 second', md5(n.id || ':' || k), true, false
               FROM nodes_node n CROSS JOIN generate_series(%(first)s, %(last)s) AS k
               WHERE n.name LIKE %(prefix)s""",
            {"every": CHECK_EVERY_S, "first": REPORTS_PER_NODE, "last": HISTORY_S // CHECK_EVERY_S - 1,
             "prefix": PREFIX + "%"})
        return cursor.rowcount


def _jobs() -> None:
    user, _ = get_user_model().objects.get_or_create(username="bench-policy")
    team, _ = Team.objects.get_or_create(name="bench-policy")
    now = timezone.now()
    Job.objects.bulk_create([
        Job(owner=user, team=team, name=f"failed-{i}", state="FAILED", end_time=now - timedelta(minutes=i % 50),
            nodes_list=_hostlist(random.randrange(NODES - 4), random.choice([1, 1, 2, 4])))
        for i in range(FAILED_JOBS)], batch_size=2000)


def _hostlist(first: int, count: int) -> str:
    """A job's nodes as Slurm writes them: "bn00042" or "bn[00042-00045]"."""
    return f"{PREFIX}{first:05d}" if count == 1 else f"{PREFIX}[{first:05d}-{first + count - 1:05d}]"


def seed() -> None:
    seeded = Node.objects.filter(name__startswith=PREFIX).count() == NODES
    if seeded and HealthReport.objects.count() >= NODES * HISTORY_S // CHECK_EVERY_S:
        # Reports age: move them to "now" so the window and the ordering stay as seeded.
        newest = HealthReport.objects.order_by("-sent_at").values_list("sent_at", flat=True).first()
        shift = timezone.now() - newest
        HealthReport.objects.update(sent_at=django.db.models.F("sent_at") + shift)
        Finding.objects.update(sent_at=django.db.models.F("sent_at") + shift)
        Job.objects.update(end_time=django.db.models.F("end_time") + shift)
        return
    started = time.monotonic()
    with transaction.atomic():
        Node.objects.all().delete()
        Job.objects.all().delete()
        nodes = _nodes()
        _reports(nodes)
        history = _history()
        _jobs()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"seeded {NODES:,} nodes, {NODES * REPORTS_PER_NODE + history:,} reports "
          f"in {time.monotonic() - started:.1f} s")


def main() -> None:
    random.seed(7)
    seed()
    t = Thresholds.from_settings()
    print(f"machine: {machine()}")
    print(f"database {DB}: {Node.objects.count():,} nodes, {HealthReport.objects.count():,} reports, "
          f"{Finding.objects.count():,} findings, {Job.objects.filter(state='FAILED').count():,} failed jobs")
    decide_all(t)  # warm the connection and the caches, as the periodic check always is
    total, loads, decides = [], [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        evidence = load_evidence(None, t)
        loaded = time.perf_counter()
        decisions = [decide(e, t) for e in evidence]
        done = time.perf_counter()
        total.append(done - started)
        loads.append(loaded - started)
        decides.append(done - loaded)
    verdicts = Counter(d.action for d in decisions)
    reasons = Counter(re.sub(r"[0-9]+", "N", d.why.split(":", 1)[0] if d.action == "drain" and
                             not d.why.startswith("lemon") else d.why.split(" in ")[0])
                      for d in decisions if d.why)
    print(f"decisions for {len(decisions):,} nodes: {dict(verdicts)}; reasons {dict(reasons)}")
    print(f"decision pass (load + decide), {RUNS} runs: {summary_ms(total)}")
    print(f"  load evidence (4 queries): p50 {percentile(loads, 50) * 1000:.1f} ms; "
          f"decide (pure Python): p50 {percentile(decides, 50) * 1000:.1f} ms")
    worst = _worst_case(t)
    print(f"worst case, every node's reports read (all 10,000 unhealthy or drained): {summary_ms(worst)}")
    print("target: <= 1,000 ms for 10,000 nodes")


def _worst_case(t: Thresholds) -> list[float]:
    """The report scan for every node, as if each had a finding in the window."""
    ids = list(Node.objects.values_list("id", flat=True))
    since = timezone.now() - timedelta(seconds=t.lemon_window_s)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        evidence = load_evidence(None, t)
        recent = policy._recent_reports(ids, t.scan_depth, since)
        [decide(e, t) for e in evidence]
        [policy.pending_fatal(r, t.clean_checks) for r in recent.values()]
        times.append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
