"""Hung nodes: mark a node DOWN in Slurm when its sensors and its slurmd have both gone silent.

Slurm alone marks a node whose slurmd died DOWN only after SlurmdTimeout (300 s here, often
more on real sites), and its jobs show RUNNING all that while. The portal knows sooner: the
node's health checks run inside slurmd, so a dead or wedged slurmd silences its sensor.

The rule (settings PORTAL_HUNG_AFTER_S, PORTAL_HUNG_CONFIRM_S): a node is hung when

* its newest health report is at least PORTAL_HUNG_AFTER_S old, and
* every probe of its slurmd (gateway.slurmd_answers: its NodeAddr:Port, twice) has gone
  unanswered for at least PORTAL_HUNG_CONFIRM_S, probing from the first check that sees the
  sensor silent for PORTAL_HUNG_AFTER_S - PORTAL_HUNG_CONFIRM_S.

Then the node is marked DOWN with the reason ``portal: hung: ...`` (Slurm requeues its jobs at
once), the 121 s BeginTime Slurm gives such jobs is lifted, and the recovery app is told
(evacuation.evacuate, cause hung_node). With ReturnToService=2 Slurm returns
it to service by itself when its slurmd registers again; the periodic check logs that.

False positives this guards against:
* a sensor-only outage (the portal's intake down, a broken health check): slurmd still answers,
  so the node is only alerted, never downed;
* a late or restarted checker: the slurmd silence clock restarts when the previous probe is
  older than the confirm window, so one late look never downs a node on old evidence;
* a node that never reported (no sensors, or a fresh database): never a candidate;
* a node Slurm no longer lists, or one already DOWN: left to Slurm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from portal.nodes import evacuation, services
from portal.nodes.models import Node, NodeAction
from portal.nodes.policy import Thresholds, record_alert
from portal.nodes.services import HUNG_PREFIX
from portal.slurm import gateway
from portal.slurm.errors import SlurmError

log = logging.getLogger(__name__)

OUT_OF_SERVICE = ("DOWN", "FAIL")
# A node Slurm has not listed for this long (the node check syncs every 10 s) is not judged.
LISTED_WITHIN = timedelta(seconds=60)
SENSOR_ONLY_ALERT = "sensors silent, slurmd answers"


@dataclass(frozen=True)
class HungRule:
    after_s: float = 15.0
    confirm_s: float = 5.0
    probe_timeout_s: float = 1.5
    check_every_s: float = 3.0

    @classmethod
    def from_settings(cls) -> HungRule:
        return cls(after_s=settings.PORTAL_HUNG_AFTER_S, confirm_s=settings.PORTAL_HUNG_CONFIRM_S,
                   probe_timeout_s=settings.PORTAL_HUNG_PROBE_TIMEOUT_S,
                   check_every_s=settings.PORTAL_HUNG_CHECK_SECONDS)

    @property
    def probe_after_s(self) -> float:
        """Sensor silence from which slurmd is probed, so both clocks can be full together."""
        return max(0.0, self.after_s - self.confirm_s)

    @property
    def max_probe_gap_s(self) -> float:
        """A previous probe older than this says nothing about slurmd now: restart its clock."""
        return max(self.confirm_s, 2 * self.check_every_s)


@dataclass(frozen=True)
class HungResult:
    probed: list[str]
    downed: list[str]
    alerted: list[str]


def candidates(rule: HungRule, now: datetime):
    """Listed nodes in service whose sensor has reported before but not lately."""
    return (Node.objects.filter(last_health_at__lt=now - timedelta(seconds=rule.probe_after_s),
                                last_seen__gte=now - LISTED_WITHIN)
            .exclude(state__in=OUT_OF_SERVICE).order_by("name"))


def find_hung_nodes(*, rule: HungRule | None = None, now: datetime | None = None) -> HungResult:
    """Probe the slurmd of every node with a silent sensor; mark the hung ones DOWN."""
    rule = rule or HungRule.from_settings()
    now = now or timezone.now()
    # A node whose sensor speaks again starts from scratch next time.
    Node.objects.filter(slurmd_silent_since__isnull=False).exclude(pk__in=candidates(rule, now)).update(
        slurmd_silent_since=None)
    probed, downed, alerted = [], [], []
    for node in candidates(rule, now):
        probed.append(node.name)
        outcome = check_node(node, rule)
        if outcome == "downed":
            downed.append(node.name)
        elif outcome == "alerted":
            alerted.append(node.name)
    return HungResult(probed=probed, downed=downed, alerted=alerted)


def check_node(node: Node, rule: HungRule) -> str:
    """Probe one candidate and act: "answers", "alerted", "silent" (not long enough) or "downed"."""
    try:
        answers = gateway.slurmd_answers(node.name, timeout_s=rule.probe_timeout_s)
    except SlurmError as exc:  # slurmctld cannot say where the node is: judge it next time
        log.warning("hung-node check: no address for %s: %s", node.name, exc)
        return "unknown"
    now = timezone.now()
    sensor_silent_s = (now - node.last_health_at).total_seconds()
    if answers:
        Node.objects.filter(pk=node.pk).update(slurmd_silent_since=None, slurmd_probed_at=now)
        if sensor_silent_s >= rule.after_s and record_alert(
                node, SENSOR_ONLY_ALERT, f"no health report for {sensor_silent_s:.0f} s, but its slurmd answers: "
                                         "not marked down (is the health check or the portal's intake broken?)",
                Thresholds.from_settings(), now=now):
            return "alerted"
        return "answers"
    since = _silence_clock(node, rule, now)
    slurmd_silent_s = (now - since).total_seconds()
    if sensor_silent_s < rule.after_s or slurmd_silent_s < rule.confirm_s:
        return "silent"
    return mark_hung(node, since, f"no health report for {sensor_silent_s:.0f} s and its slurmd "
                                  f"has not answered for {slurmd_silent_s:.0f} s")


def _silence_clock(node: Node, rule: HungRule, now: datetime) -> datetime:
    """Since when slurmd has failed every probe, restarted when the last probe is too old."""
    since = node.slurmd_silent_since
    gap = (now - node.slurmd_probed_at).total_seconds() if node.slurmd_probed_at else None
    if since is None or gap is None or gap > rule.max_probe_gap_s:
        since = now
    Node.objects.filter(pk=node.pk).update(slurmd_silent_since=since, slurmd_probed_at=now)
    return since


def mark_hung(node: Node, since: datetime, why: str) -> str:
    """Mark the node DOWN and move its jobs off it, once: the conditional update on the silence
    clock is the claim, so two checks at once act once.

    DOWN comes first: Slurm then requeues the node's jobs itself (a NODE_FAIL run) and frees
    their allocation cleanly. Requeueing them first (`scontrol requeue` while the node is up)
    also moves them, but when the node comes back its old copy registers "on wrong node" and
    Slurm 22.05 then leaks the new run's GPUs on its new node (AllocTRES stays gres/gpu=4 with no
    job there) once that run ends: measured, see README "Hung nodes". Slurm holds its requeued jobs
    for 121 s (BeginTime); the check lifts that for the jobs it saw on the node.
    """
    if not Node.objects.filter(pk=node.pk, slurmd_silent_since=since).update(slurmd_silent_since=None):
        return "claimed elsewhere"
    reason = f"{HUNG_PREFIX} {why}"
    jobs = gateway.running_job_ids(node.name)
    try:
        gateway.down_node(node.name, reason)
    except SlurmError as exc:
        NodeAction.objects.create(node=node, kind=NodeAction.Kind.DOWN, automatic=True, reason=reason[:300],
                                  ok=False, detail=exc.message[:500])
        raise
    now = timezone.now()
    # The periodic check would record this outage too: it is recorded here, with the why.
    Node.objects.filter(pk=node.pk, unreachable_since__isnull=True).update(unreachable_since=now)
    services.refresh_node(node)
    released = [job_id for job_id in jobs if _start_now(job_id)]
    moved = _evacuate(node, reason)
    NodeAction.objects.create(node=node, kind=NodeAction.Kind.DOWN, automatic=True, reason=reason[:300],
                              detail=(f"marked DOWN in Slurm by the portal (hung node); jobs requeued by Slurm: "
                                      f"{_ids(jobs)}, made eligible at once: {_ids(released)}; "
                                      f"moved by recovery: {_ids(moved)}")[:500])
    log.error("hung node: marked %s DOWN (%s); jobs requeued %s", node.name, why, jobs)
    return "downed"


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "none"


def _start_now(job_id: int) -> bool:
    try:
        return gateway.start_now_if_delayed(job_id)
    except SlurmError as exc:  # ended or cancelled meanwhile: nothing to hurry
        log.warning("hung node: job %s not made eligible: %s", job_id, exc)
        return False


def _evacuate(node: Node, reason: str) -> list[int]:
    """Tell the recovery app (it records the attempts; Slurm has already requeued the jobs)."""
    try:
        return evacuation.evacuate(node.name, cause=evacuation.HUNG_NODE, detail=reason)
    except SlurmError as exc:
        log.error("hung node: recovery for %s failed: %s", node.name, exc)
        return []
