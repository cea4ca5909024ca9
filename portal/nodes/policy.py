"""The node health policy: what a node's reports mean, and the drains, resumes and alerts that follow.

Two halves, kept apart so the deciding is cheap and testable without Slurm:

* ``decide(evidence, thresholds)`` is a pure function of plain data (``NodeEvidence``), loaded for
  one node or for the whole fleet in three queries (``load_evidence``);
* ``carry_out`` is the thin apply step: it re-reads the node from Slurm, checks the
  automatic-drain cap under a short lock of the partition's rows and claims the drain, then
  (no transaction open, no lock held) calls services.drain_node / resume_node with
  automatic=True (reason prefixed ``portal:``), or records an ALERT.

Rules, in order (thresholds in settings, "health policy" block):

1. a fatal finding (action drain or reboot) since the node last passed N consecutive clean
   checks: drain at once. Only reports inside the lemon window count: an older fault is
   history, acted on when it arrived;
2. a lemon: too many soft XIDs in the window, the same other warning in too many reports, or
   too many failed jobs (from at least two users) on it: drain;
3. drained with the ``portal:`` prefix and the last N reports clean (and no rule above holds):
   resume. An admin's drain (any other reason) is never resumed, and never relabelled.

Cap: at most max(1, floor(share x partition size)) nodes of a partition are out of service by
automatic action at a time (8 GPU nodes x 10% -> 1). It counts every node drained or downed
with the ``portal:`` reason: the policy's drains, the hooks' local drains and the hung-node
check's downs (is_auto_drained). It stops only lemon drains: beyond it the policy records an
ALERT and logs at ERROR instead, because many nodes turning "lemon" at once is more often a
shared cause (a bad driver push, a cooling fault, the sensor itself) than many broken nodes.
A fatal finding drains whatever the cap says (a node with a dead GPU must take no new job, and
its prolog would drain it anyway) and raises the same ALERT when it goes over the cap; its jobs
are moved off the node at once (evacuation.evacuate), also when the node was already drained
by a hook or an admin, or the drain failed.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.utils import timezone

from portal.jobs.models import Job
from portal.nodes import evacuation, services
from portal.nodes.models import Finding, HealthReport, Node, NodeAction
from portal.nodes.services import AUTO_PREFIX, HUNG_PREFIX
from portal.slurm.errors import SlurmError, SlurmUnavailable
from portal.slurm.parse import expand_hostlist

log = logging.getLogger(__name__)

DRAIN, RESUME, NOTHING = "drain", "resume", "nothing"
# Job states that count against the node they ran on (lemon detection).
FAILED_JOB_STATES = ("FAILED", "NODE_FAIL")
# portal/recovery's INFRASTRUCTURE_CAUSES, spelled out: portal.recovery imports this app, not the
# reverse. A job classified "application" with one of them failed the same way on several nodes.
CRASH_LOOP_CAUSES = ("node_fail", "fatal_finding", "prolog_fail", "hung_node")
# Warnings that say something about the job, not the node: killed leftovers of a job.
NOT_NODE_WARNINGS = frozenset({"stray-process"})
# How many of a node's newest reports the decision reads beyond the N clean checks it needs. A
# fatal finding further back than this behind unclean reports was acted on when it arrived.
SCAN_MARGIN = 12


@dataclass(frozen=True)
class Thresholds:
    clean_checks: int = 3
    lemon_window_s: int = 3600
    lemon_xids: int = 3
    soft_repeats: int = 5
    failed_jobs: int = 5
    drain_cap: float = 0.10
    alert_repeat_s: int = 600
    stale_after_s: int = 300

    @classmethod
    def from_settings(cls) -> Thresholds:
        return cls(clean_checks=settings.PORTAL_HEALTH_CLEAN_CHECKS,
                   lemon_window_s=settings.PORTAL_HEALTH_LEMON_WINDOW_S,
                   lemon_xids=settings.PORTAL_HEALTH_LEMON_XIDS,
                   soft_repeats=settings.PORTAL_HEALTH_SOFT_REPEATS,
                   failed_jobs=settings.PORTAL_HEALTH_LEMON_FAILED_JOBS,
                   drain_cap=settings.PORTAL_HEALTH_DRAIN_CAP,
                   alert_repeat_s=settings.PORTAL_HEALTH_ALERT_REPEAT_S,
                   stale_after_s=settings.PORTAL_HEALTH_STALE_AFTER_S)

    @property
    def scan_depth(self) -> int:
        return self.clean_checks + SCAN_MARGIN


@dataclass(frozen=True)
class RecentReport:
    clean: bool
    # "check: detail" of the report's first fatal drain/reboot finding; "" when it has none.
    fatal: str = ""


@dataclass(frozen=True)
class NodeEvidence:
    """Everything the decision reads about one node: plain data, no ORM objects."""

    node_id: int
    name: str
    drained: bool = False
    reason: str = ""
    recent: tuple[RecentReport, ...] = ()     # newest first
    xid_warnings: int = 0                     # soft XIDs (application, unclassified) in the window
    soft_repeats: dict[str, int] = field(default_factory=dict)  # other warning check -> reports with it
    failed_jobs: int = 0
    failed_job_users: int = 0


@dataclass(frozen=True)
class Decision:
    action: str
    why: str = ""
    # A fatal finding (not a lemon): drains whatever the cap says, and the node's jobs leave it.
    fatal: bool = False


NO_DECISION = Decision(NOTHING)


# ---------------------------------------------------------------- the decision (pure)

def pending_fatal(recent: tuple[RecentReport, ...], clean_checks: int) -> str:
    """The newest fatal finding the node has not yet earned its way past with N clean checks."""
    streak = 0
    for report in recent:
        if report.clean:
            streak += 1
            if streak >= clean_checks:
                return ""
            continue
        if report.fatal:
            return report.fatal
        streak = 0
    return ""


def clean_streak(recent: tuple[RecentReport, ...]) -> int:
    streak = 0
    for report in recent:
        if not report.clean:
            break
        streak += 1
    return streak


def lemon_reason(e: NodeEvidence, t: Thresholds) -> str:
    hours = f"{t.lemon_window_s / 3600:g} h"
    if e.xid_warnings >= t.lemon_xids:
        return f"lemon: {e.xid_warnings} soft XIDs in {hours}"
    repeated = [(n, check) for check, n in e.soft_repeats.items() if n >= t.soft_repeats]
    if repeated:
        n, check = max(repeated)
        return f"lemon: {check} warning in {n} reports in {hours}"
    if e.failed_jobs >= t.failed_jobs and e.failed_job_users >= 2:
        return f"lemon: {e.failed_jobs} jobs of {e.failed_job_users} users failed on it in {hours}"
    return ""


def decide(e: NodeEvidence, t: Thresholds) -> Decision:
    """What the policy wants for one node; NOTHING when the node is where it should be."""
    fatal = pending_fatal(e.recent, t.clean_checks)
    why = fatal or lemon_reason(e, t)
    if why:
        # Already drained, by us or by an admin: never relabel someone else's drain.
        return NO_DECISION if e.drained else Decision(DRAIN, why, fatal=bool(fatal))
    if e.drained and e.reason.startswith(AUTO_PREFIX) and clean_streak(e.recent) >= t.clean_checks:
        return Decision(RESUME, f"healthy: {t.clean_checks} consecutive clean checks")
    return NO_DECISION


def drain_cap(partition_size: int, share: float) -> int:
    """How many nodes of a partition may be drained automatically at once: floor, at least 1."""
    return max(1, math.floor(partition_size * share + 1e-9))


def cap_allows(auto_drained_others: int, partition_size: int, share: float) -> bool:
    """True when draining one more node keeps the partition within its automatic-drain cap."""
    return auto_drained_others + 1 <= drain_cap(partition_size, share)


# ---------------------------------------------------------------- evidence from the database

# Each node's newest reports in the window (an index scan per node on health_node_sent, however
# many reports the table holds), folded into one row per node: a pattern of "c" (clean), "f"
# (fatal drain/reboot finding) and "u" (other unclean), newest first, and the fatal findings'
# "check: detail" in the same order. One short row per node is far cheaper to fetch than a row
# per report.
_RECENT_SQL = f"""
SELECT n.id,
       string_agg(CASE WHEN r.clean THEN 'c' WHEN r.fatal <> '' THEN 'f' ELSE 'u' END, '' ORDER BY r.sent_at DESC),
       array_agg(r.fatal ORDER BY r.sent_at DESC) FILTER (WHERE r.fatal <> '')
FROM {Node._meta.db_table} n
CROSS JOIN LATERAL (
    SELECT h.sent_at, h.clean,
           CASE WHEN h.clean THEN '' ELSE COALESCE((
               SELECT f.check_name || ': ' || f.detail FROM {Finding._meta.db_table} f
               WHERE f.report_id = h.id AND f.severity = 'fatal' AND f.action IN ('drain', 'reboot')
               ORDER BY (f.action = 'reboot') DESC, f.id LIMIT 1), '') END AS fatal
    FROM {HealthReport._meta.db_table} h
    WHERE h.node_id = n.id AND h.sent_at >= %s
    ORDER BY h.sent_at DESC
    LIMIT %s
) r
WHERE n.id = ANY(%s)
GROUP BY n.id
"""  # noqa: S608 - table names come from the models; every value is a parameter

_CLEAN, _UNCLEAN = RecentReport(True), RecentReport(False)


def _unfold(pattern: str, fatals: list[str] | None) -> tuple[RecentReport, ...]:
    details = iter(fatals or ())
    return tuple(_CLEAN if ch == "c" else _UNCLEAN if ch == "u" else RecentReport(False, next(details))
                 for ch in pattern)


def _recent_reports(node_ids: list[int], depth: int, since: datetime) -> dict[int, tuple[RecentReport, ...]]:
    if not node_ids:
        return {}
    with transaction.atomic(), connection.cursor() as cursor:
        # PostgreSQL's JIT would spend longer compiling this query than running it.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(_RECENT_SQL, [since, depth, list(node_ids)])
        return {node_id: _unfold(pattern, fatals) for node_id, pattern, fatals in cursor.fetchall()}


def _findings(node_ids: list[int] | None, since: datetime) -> tuple[Counter, dict[int, dict[str, int]], set[int]]:
    """Soft XIDs per node, per other warning check the number of reports carrying it, and the
    nodes with any fatal or warning finding in the window (one GROUP BY on finding_severity_sent)."""
    rows = Finding.objects.filter(severity__in=[Finding.Severity.FATAL, Finding.Severity.WARNING], sent_at__gte=since)
    if node_ids is not None:
        rows = rows.filter(node_id__in=node_ids)
    xids: Counter = Counter()
    repeats: dict[int, dict[str, int]] = defaultdict(dict)
    unhealthy: set[int] = set()
    grouped = rows.values("node_id", "check_name", "severity").annotate(
        n=Count("id"), reports=Count("report_id", distinct=True))
    for row in grouped.order_by():
        unhealthy.add(row["node_id"])
        if row["severity"] != Finding.Severity.WARNING:
            continue
        if row["check_name"] == "xid":
            xids[row["node_id"]] = row["n"]  # each XID event is reported once (the sensor's cursor)
        elif row["check_name"] not in NOT_NODE_WARNINGS:
            repeats[row["node_id"]][row["check_name"]] = row["reports"]
    return xids, repeats, unhealthy


def _failed_jobs(since: datetime) -> tuple[Counter, dict[str, set[int]]]:
    """Jobs that failed in the window, per node name, and whose jobs they were."""
    jobs: Counter = Counter()
    users: dict[str, set[int]] = defaultdict(set)
    # A job that failed the same way on several nodes is its own problem (portal/recovery marks
    # it application-class with an infrastructure cause): it must not make healthy nodes lemons.
    crash_loop = Q(failure_class="application", failure_cause__in=CRASH_LOOP_CAUSES)
    rows = (Job.objects.filter(state__in=FAILED_JOB_STATES, end_time__gte=since).exclude(nodes_list="")
            .exclude(crash_loop))
    for nodes_list, owner_id in rows.values_list("nodes_list", "owner_id"):
        for name in expand_hostlist(nodes_list):
            jobs[name] += 1
            users[name].add(owner_id)
    return jobs, users


def load_evidence(node_ids: list[int] | None, t: Thresholds, *, now: datetime | None = None) -> list[NodeEvidence]:
    """Evidence for the given nodes (None: every node) in four queries, whatever their number.

    Only reports and findings inside the lemon window count: an older fault is history (the
    policy acted on it when it arrived). For every node at once, reports are read only where a
    decision can come from them: nodes with a fatal or warning finding in the window, and
    drained nodes (to resume). Any other node's reports are all clean, so nothing follows.
    """
    since = (now or timezone.now()) - timedelta(seconds=t.lemon_window_s)
    nodes = Node.objects.order_by("id")
    if node_ids is not None:
        nodes = nodes.filter(id__in=node_ids)
    # "Drained?" computed by PostgreSQL: decoding 10,000 JSON flag lists in Python costs more.
    rows = list(nodes.annotate(drained=ExpressionWrapper(Q(flags__contains=["DRAIN"]), output_field=BooleanField()))
                .values_list("id", "name", "drained", "reason"))
    xids, repeats, unhealthy = _findings(node_ids, since)
    failed, failed_users = _failed_jobs(since)
    scan = node_ids if node_ids is not None else [pk for pk, _, drained, _ in rows if pk in unhealthy or drained]
    recent = _recent_reports(scan, t.scan_depth, since)
    return [
        NodeEvidence(node_id=pk, name=name, drained=drained, reason=reason, recent=recent.get(pk, ()),
                     xid_warnings=xids.get(pk, 0), soft_repeats=repeats.get(pk, {}),
                     failed_jobs=failed.get(name, 0), failed_job_users=len(failed_users.get(name, ())))
        for pk, name, drained, reason in rows
    ]


def decide_all(t: Thresholds, *, now: datetime | None = None) -> list[tuple[NodeEvidence, Decision]]:
    """The decision for every node (no Slurm call): what the periodic check and the bench run."""
    return [(e, decide(e, t)) for e in load_evidence(None, t, now=now)]


# ---------------------------------------------------------------- acting on a decision

def is_auto_drained(node: Node) -> bool:
    """Out of service by automatic action: drained or downed with the ``portal:`` reason, which the
    policy's drains, the nodes' own hook drains (slurm_plugins/slurmctl.py) and the hung-node
    check's downs all carry. An admin's drain and Slurm's own "Not responding" do not count: the
    cap bounds what our automation takes away, not what people or dead machines do."""
    out = "DRAIN" in node.flags or node.state in ("DOWN", "FAIL")
    return out and node.reason.startswith(AUTO_PREFIX)


# A drain claim older than this is from a worker that died between deciding and recording
# Slurm's answer (scontrol's own timeout is far shorter); it no longer counts against the cap.
CLAIM_EXPIRES = timedelta(seconds=120)


def _claimed(node: Node, now: datetime) -> bool:
    return node.drain_claimed_at is not None and now - node.drain_claimed_at < CLAIM_EXPIRES


def _lock_partition_peers(node: Node) -> dict[int, Node]:
    """Lock every node sharing a partition with `node` (and `node`), in the same order as
    sync_nodes does (by name), so two drains in one partition never both pass the cap."""
    same = Q(pk=node.pk)
    for partition in node.partitions:
        same |= Q(partitions__contains=[partition])
    return {peer.pk: peer for peer in Node.objects.select_for_update().filter(same).order_by("name")}


def cap_blocker(node: Node, peers: dict[int, Node], share: float, *, now: datetime | None = None) -> str:
    """Why the cap forbids draining `node` now ("" when it does not). Nodes another worker is
    draining right now (claimed) count as drained."""
    now = now or timezone.now()
    for partition in node.partitions:
        members = [p for p in peers.values() if partition in p.partitions]
        others = sum(1 for p in members if p.pk != node.pk and (is_auto_drained(p) or _claimed(p, now)))
        if not cap_allows(others, len(members), share):
            return (f"partition {partition}: {others} of {len(members)} nodes already drained automatically "
                    f"(cap {drain_cap(len(members), share)})")
    return ""


def record_alert(node: Node, reason: str, detail: str, t: Thresholds, *, now: datetime | None = None) -> bool:
    """An ALERT for admins, at most once per node and reason per alert_repeat_s. True if recorded."""
    now = now or timezone.now()
    recent = NodeAction.objects.filter(node=node, kind=NodeAction.Kind.ALERT, reason=reason[:300],
                                       at__gte=now - timedelta(seconds=t.alert_repeat_s))
    if recent.exists():
        return False
    NodeAction.objects.create(node=node, kind=NodeAction.Kind.ALERT, automatic=True, reason=reason[:300],
                              detail=detail[:500])
    log.error("node health ALERT: node=%s %s (%s)", node.name, reason, detail)
    return True


def _claim_drain(node: Node, why: str, t: Thresholds, *, fatal: bool = False) -> str:
    """Decide under the partition's row locks, held only for this short transaction: "claimed"
    (the node's drain_claimed_at is set, so concurrent drains count it), or why not.

    A fatal finding is claimed whatever the cap says (a node with a dead GPU must take no new
    job), with an ALERT when it goes over the cap; only lemon drains are stopped by it."""
    now = timezone.now()
    with transaction.atomic():
        peers = _lock_partition_peers(node)
        locked = peers[node.pk]  # the locked row: another worker may have drained it meanwhile
        if "DRAIN" in locked.flags:
            return "already drained"
        if _claimed(locked, now):
            return "being drained"
        blocked = cap_blocker(locked, peers, t.drain_cap, now=now)
        if blocked and not fatal:
            record_alert(locked, f"wanted to drain: {why}", f"not drained: {blocked}", t)
            return "alert"
        if blocked:
            record_alert(locked, f"drained over the cap: {why}", f"fatal finding, drained anyway: {blocked}", t)
        Node.objects.filter(pk=node.pk).update(drain_claimed_at=now)
    return "claimed"


def _drain(node_id: int, why: str, t: Thresholds, *, fatal: bool = False) -> str:
    # Slurm is called outside any transaction: scontrol may take its whole timeout, and holding
    # the partition's row locks meanwhile would stall every other writer of those nodes.
    node = services.refresh_node(Node.objects.get(pk=node_id))  # live state and partitions
    outcome = _claim_drain(node, why, t, fatal=fatal)
    if outcome != "claimed":
        return outcome
    try:
        services.drain_node(node=node, reason=why, automatic=True)  # records the attempt, failed or not
    finally:
        Node.objects.filter(pk=node.pk).update(drain_claimed_at=None)
    log.warning("node health: drained %s (%s)", node.name, why)
    return "drained"


def _resume(node_id: int, why: str) -> str:
    # No lock: resuming needs no cap, and Slurm's answer is re-read right before acting.
    node = services.refresh_node(Node.objects.get(pk=node_id))
    if "DRAIN" not in node.flags:
        return "not drained"
    if not node.reason.startswith(AUTO_PREFIX):
        return "drained by a person; left alone"
    services.resume_node(node=node, automatic=True, reason=why)
    log.info("node health: resumed %s (%s)", node.name, why)
    return "resumed"


def carry_out(evidence: NodeEvidence, decision: Decision, t: Thresholds) -> str:
    """Apply one decision in Slurm. Idempotent: each step re-checks the node's live state."""
    if decision.action == DRAIN:
        return _drain(evidence.node_id, decision.why, t, fatal=decision.fatal)
    if decision.action == RESUME:
        return _resume(evidence.node_id, decision.why)
    return "nothing"


def runs_jobs(node: Node) -> bool:
    return node.alloc_cpus > 0 or node.state in ("ALLOCATED", "MIXED")


def evacuate_if_fatal(evidence: NodeEvidence, t: Thresholds) -> list[int]:
    """Move the jobs off a node with an open fatal finding, now, not when Slurm notices: whether
    the policy drained it, a hook did, an admin had, or the drain failed. Idempotent (called on
    every check until no job is left; evacuate_node is idempotent too)."""
    fatal = pending_fatal(evidence.recent, t.clean_checks)
    if not fatal:
        return []
    node = services.refresh_node(Node.objects.get(pk=evidence.node_id))  # jobs may have just started
    if not runs_jobs(node):
        return []
    moved = evacuation.evacuate(node.name, cause=evacuation.FATAL_FINDING, detail=fatal)
    if moved:
        log.warning("node health: moved jobs %s off %s (%s)", moved, node.name, fatal)
    return moved


def apply_node_policy(node_id: int, *, now: datetime | None = None) -> str:
    """Decide for one node from its stored reports and act on it (the per-report task)."""
    t = Thresholds.from_settings()
    evidence = load_evidence([node_id], t, now=now)
    if not evidence:
        return "no such node"
    try:
        return carry_out(evidence[0], decide(evidence[0], t), t)
    finally:
        evacuate_if_fatal(evidence[0], t)  # also when the drain failed


# ---------------------------------------------------------------- the periodic check

UNREACHABLE = Q(state__in=["DOWN", "FAIL"]) | Q(flags__contains=["NOT_RESPONDING"])


@dataclass(frozen=True)
class CheckResult:
    down: list[str]
    up: list[str]
    stale: list[str]
    acted: dict[str, str]


def record_reachability(*, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """Record each node going DOWN/NOT_RESPONDING and coming back, once per outage.

    The conditional UPDATE is the claim: two checks at once record an outage once.
    """
    now = now or timezone.now()
    down, up = [], []
    for node in Node.objects.filter(UNREACHABLE, unreachable_since__isnull=True):
        if Node.objects.filter(pk=node.pk, unreachable_since__isnull=True).update(unreachable_since=now):
            NodeAction.objects.create(node=node, kind=NodeAction.Kind.DOWN, automatic=True,
                                      reason=node.display_state[:300], detail=_who_downed(node)[:500])
            log.warning("node %s is %s (%s)", node.name, node.display_state, node.reason or "no reason")
            down.append(node.name)
    for node in Node.objects.exclude(UNREACHABLE).filter(unreachable_since__isnull=False):
        since = node.unreachable_since
        if Node.objects.filter(pk=node.pk, unreachable_since=since).update(unreachable_since=None):
            NodeAction.objects.create(node=node, kind=NodeAction.Kind.UP, automatic=True,
                                      reason=node.display_state[:300],
                                      detail=f"unreachable for {(now - since).total_seconds():.0f} s; "
                                             f"{_how_back(node)}")
            log.info("node %s responds again (%s)", node.name, node.display_state)
            up.append(node.name)
    return down, up


def _who_downed(node: Node) -> str:
    if "NOT_RESPONDING" in node.flags or node.reason.startswith("Not responding"):
        return f"Slurm: its slurmd does not answer ({node.reason or 'no reason'})"
    if node.reason.startswith(AUTO_PREFIX):
        return f"the portal or a health hook: {node.reason}"
    return f"by hand, outside the portal: {node.reason or 'no reason'}"


def _how_back(node: Node) -> str:
    last_down = node.actions.filter(kind=NodeAction.Kind.DOWN).order_by("-at", "-id").first()
    if last_down is not None and last_down.reason.startswith(HUNG_PREFIX):
        return "its slurmd registered again and Slurm returned it to service (ReturnToService=2)"
    return "Slurm shows it responding again"


def alert_stale_reports(t: Thresholds, *, listed_since: datetime, now: datetime | None = None) -> list[str]:
    """Alert on responding nodes (listed by Slurm since `listed_since`) whose sensor went silent:
    a health check that stopped running checks nothing, and nothing else would say so."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=t.stale_after_s)
    stale = Node.objects.filter(last_health_at__lt=cutoff, last_seen__gte=listed_since,
                                unreachable_since__isnull=True)
    for node in stale:
        age = (now - node.last_health_at).total_seconds()
        record_alert(node, "health reports stale", f"no report for {age:.0f} s", t, now=now)
    return [node.name for node in stale]


def reconcile(t: Thresholds, *, now: datetime | None = None) -> dict[str, str]:
    """Decide for every node and act on the few that need it, so that no lost task matters."""
    acted = {}
    for evidence, decision in decide_all(t, now=now):
        if decision.action != NOTHING:
            acted[evidence.name] = _act(evidence, decision, t)
        if _evacuate(evidence, t):
            acted[evidence.name] = f"{acted.get(evidence.name, 'nothing')}; jobs moved"
    return acted


def _act(evidence: NodeEvidence, decision: Decision, t: Thresholds) -> str:
    try:
        return carry_out(evidence, decision, t)
    except SlurmUnavailable:
        raise  # the whole check retries
    except SlurmError as exc:
        log.error("node health: %s %s failed: %s", decision.action, evidence.name, exc)
        return f"failed: {exc}"


def _evacuate(evidence: NodeEvidence, t: Thresholds) -> list[int]:
    try:
        return evacuate_if_fatal(evidence, t)
    except SlurmUnavailable:
        raise
    except SlurmError as exc:
        log.error("node health: moving jobs off %s failed: %s", evidence.name, exc)
        return []


def check_nodes(*, now: datetime | None = None) -> CheckResult:
    """The periodic check: sync from Slurm, outages, stale sensors, then the policy over all."""
    t = Thresholds.from_settings()
    started = now or timezone.now()
    services.sync_nodes()
    down, up = record_reachability(now=now)
    stale = alert_stale_reports(t, listed_since=started, now=now)
    return CheckResult(down=down, up=up, stale=stale, acted=reconcile(t, now=now))
