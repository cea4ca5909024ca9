"""Moving jobs off failed nodes: attempts, the requeue outbox, evacuation and crash-loop limits.

A run that ended badly is recorded on its Attempt with a verdict (classify.py). For an
infrastructure failure the worker decides, under the job's row lock:

* the job asked not to be requeued (--no-requeue): recorded, nothing else;
* it failed the same way on PORTAL_CRASH_LOOP_NODES different nodes: it is the job's own
  problem (reclassified as application, class "application" with an infrastructure cause):
  held in Slurm, the owner told;
* it has had PORTAL_MAX_AUTO_REQUEUES automatic requeues in a row without progress (no newer
  checkpoint, less than PORTAL_CRASH_LOOP_PROGRESS seconds run): held, the owner told;
* otherwise: requeued, after the backoff PORTAL_REQUEUE_BACKOFF[n] (0, 30, 120 s by default).

The decision is written as a Recovery row (the outbox) in the same transaction, and only then
does anyone talk to Slurm (`finish_recovery`): requeue (or requeuehold) the run, then, once the
job is pending, exclude the failed node and every node with an open fatal finding, drop them
from a ReqNodeList, and let it start now (or at the backoff's end) instead of the ~120 s Slurm
waits after a requeue. The row is done when Slurm shows the job pending with the exclusion (or
running elsewhere; or held, for a hold). A worker killed at any point leaves the row open and
its claim runs out: the next cycle reads Slurm again and does what is left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal.infra.handoff import hand_off
from portal.jobs.models import Job
from portal.nodes.models import Finding
from portal.nodes.policy import Thresholds, load_evidence, pending_fatal
from portal.recovery import checkpoints
from portal.recovery.classify import NodeFault, Verdict, backoff_s, crash_loop, infrastructure, xid_in
from portal.recovery.models import Attempt, Cause, FailureClass, Notification, Recovery
from portal.slurm import gateway
from portal.slurm.errors import SlurmError, SlurmNotFound, SlurmUnavailable
from portal.slurm.parse import expand_hostlist
from portal.slurm.types import JobDetail

log = logging.getLogger(__name__)

NOTIFY_TASK = "workers.tasks.notify.notify_job_task"
# A worker acting on a Recovery row holds it this long (several scontrol calls at their timeout
# fit); a killed worker's claim simply runs out and the next cycle finishes the row.
CLAIM = timedelta(seconds=90)
FATAL_ACTIONS = (Finding.Action.DRAIN, Finding.Action.REBOOT)
# A run that ended so before the worker acted is not requeued: a person cancelled it, or it finished.
LEFT_ALONE = frozenset({"CANCELLED", "COMPLETED"})
# An outbox row Slurm keeps refusing is given up after this long (logged at ERROR each cycle until then).
GIVE_UP = timedelta(minutes=30)
# Slurm stamps StartTime in whole seconds.
ELIGIBLE_SLACK = timedelta(seconds=2)
FINISHING = "finishing its old run"
# How long finish_recovery waits for a requeued job's old run to be cleaned up (epilog) before
# leaving the rest to the next cycle: evacuation should place the job at once.
FINISH_WAIT_S = 6.0
# Slurm's pending reasons after a failed launch that it holds (without nohold_on_prolog_fail).
PROLOG_HOLD_REASONS = frozenset({"launch failed requeued held", "launch_failed_requeued_held"})


# ---------------------------------------------------------------- node facts

def open_fatal_nodes(*, now: datetime | None = None) -> set[str]:
    """Nodes with a fatal finding they have not yet passed N clean checks since (the policy's
    rule 1), drained or not: a requeued job must not land on one the drain cap left open."""
    t = Thresholds.from_settings()
    since = (now or timezone.now()) - timedelta(seconds=t.lemon_window_s)
    ids = list(Finding.objects.filter(severity=Finding.Severity.FATAL, action__in=FATAL_ACTIONS, sent_at__gte=since)
               .values_list("node_id", flat=True).distinct())
    return {e.name for e in load_evidence(ids, t, now=now) if pending_fatal(e.recent, t.clean_checks)} if ids else set()


def faults_on(nodes: list[str], start: datetime | None, end: datetime | None) -> list[NodeFault]:
    """Fatal findings on `nodes` from `start` until shortly after `end` (a sensor reports a
    fault that killed the job a few seconds after the job ended), oldest first."""
    if not nodes or start is None:
        return []
    until = (end or timezone.now()) + timedelta(seconds=settings.PORTAL_RECOVERY_FINDING_GRACE_S)
    rows = (Finding.objects.filter(node__name__in=nodes, severity=Finding.Severity.FATAL, action__in=FATAL_ACTIONS,
                                   sent_at__gte=start, sent_at__lte=until)
            .order_by("sent_at", "id").values_list("node__name", "check_name", "detail", "xid"))
    return [NodeFault(node, f"{check}: {detail}", xid) for node, check, detail, xid in rows]


def node_health(nodes: list[str], start: datetime | None, end: datetime | None) -> dict:
    """Evidence for an application failure: each node's last health verdict and its findings
    while the run ran, so the owner sees the node was fine (or not)."""
    grace = timedelta(seconds=settings.PORTAL_RECOVERY_FINDING_GRACE_S)
    window = Q(sent_at__gte=start) if start else Q()
    findings = (Finding.objects.filter(window, node__name__in=nodes, sent_at__lte=(end or timezone.now()) + grace)
                .exclude(severity=Finding.Severity.INFO).order_by("sent_at")
                .values_list("node__name", "severity", "check_name", "detail")[:50])
    health = {name: {"findings": []} for name in nodes}
    for name, severity, check, detail in findings:
        health[name]["findings"].append(f"{severity} {check}: {detail}")
    for data in health.values():
        data["healthy"] = not any(f.startswith("fatal") for f in data["findings"])
    return health


# ---------------------------------------------------------------- attempts

def attempt_gpus(job: Job, slurm_gpus: int = 0) -> int:
    """GPUs of a run's allocation: Slurm's TRES when known (sbatch --gpus too), else the request."""
    return slurm_gpus or job.nodes * job.gpus_per_node


def open_attempt(job: Job, number: int, *, started_at: datetime | None, nodes_list: str, gpus: int) -> Attempt:
    """The attempt for run `number`, created when first seen with the checkpoint it starts from."""
    attempt, created = Attempt.objects.get_or_create(job=job, number=number, defaults={
        "started_at": started_at, "nodes_list": nodes_list[:500], "gpus": gpus})
    if created:
        latest = checkpoints.latest_for(job)
        if latest is not None:
            Attempt.objects.filter(pk=attempt.pk).update(resumed_from=latest.path[:500])
            attempt.resumed_from = latest.path[:500]
    elif not attempt.started_at and started_at:
        Attempt.objects.filter(pk=attempt.pk).update(started_at=started_at, nodes_list=nodes_list[:500],
                                                     gpus=gpus or attempt.gpus)
        attempt.started_at, attempt.nodes_list = started_at, nodes_list[:500]
    return attempt


def _close(attempt: Attempt, ended_at: datetime, *, succeeded: bool) -> None:
    """End time, the newest complete checkpoint and the work lost since it (GPU-seconds)."""
    attempt.ended_at = ended_at
    latest = checkpoints.latest_for(attempt.job)
    if latest is not None:
        attempt.last_checkpoint = latest.path[:500]
        attempt.last_checkpoint_at = datetime.fromtimestamp(latest.completed_at, tz=ended_at.tzinfo)
    if succeeded or attempt.started_at is None:
        attempt.lost_gpu_s = 0.0 if succeeded else None
        return
    since = max(filter(None, [attempt.started_at, attempt.last_checkpoint_at]))
    attempt.lost_gpu_s = max(0.0, (ended_at - since).total_seconds()) * attempt.gpus


def record_success(attempt: Attempt, ended_at: datetime) -> None:
    if attempt.outcome:
        return
    _close(attempt, ended_at, succeeded=True)
    attempt.outcome = Attempt.Outcome.SUCCEEDED
    attempt.save()


def record_quiet_end(attempt: Attempt, ended_at: datetime, verdict: Verdict) -> None:
    """A run that ended without a failure the worker acts on (requeued by a person)."""
    if attempt.outcome:
        return
    _close(attempt, ended_at, succeeded=False)
    attempt.detail, attempt.outcome = verdict.detail[:500], Attempt.Outcome.REQUEUED
    attempt.save()


def _set_verdict(attempt: Attempt, verdict: Verdict) -> None:
    attempt.failure_class, attempt.cause, attempt.detail = verdict.failure_class, verdict.cause, verdict.detail[:500]
    attempt.failed_node = verdict.failed_node[:64]
    attempt.exit_code, attempt.signal = verdict.exit_code, verdict.signal
    if verdict.infrastructure:
        attempt.evidence = {**attempt.evidence, "signature": verdict.signature, "xid": verdict.xid}


def _notify(attempt: Attempt, kind: str) -> None:
    transaction.on_commit(lambda: hand_off(NOTIFY_TASK, attempt.pk, kind))


def record_application_failure(attempt: Attempt, ended_at: datetime, verdict: Verdict, evidence: dict) -> None:
    """The job's own failure: recorded with its evidence, the owner told, nothing requeued."""
    with transaction.atomic():
        locked = Attempt.objects.select_for_update().get(pk=attempt.pk)
        if locked.outcome:
            return
        _close(locked, ended_at, succeeded=False)
        _set_verdict(locked, verdict)
        locked.evidence = {**locked.evidence, **evidence}
        locked.outcome = Attempt.Outcome.FAILED
        locked.save()
        Job.objects.filter(pk=locked.job_id).update(failure_class=verdict.failure_class, failure_cause=verdict.cause)
        if verdict.cause != Cause.CANCELLED:  # whoever cancelled it knows
            _notify(locked, Notification.Kind.FAILED)


def _earlier_failures(job: Job, number: int, now: datetime) -> list[tuple[str, str]]:
    since = now - timedelta(seconds=settings.PORTAL_CRASH_LOOP_WINDOW_S)
    rows = (job.attempts.filter(number__lt=number, ended_at__gte=since).exclude(failed_node="")
            .values_list("evidence", "failed_node"))
    return [(evidence.get("signature", ""), node) for evidence, node in rows if evidence.get("signature")]


def _progressed(attempt: Attempt) -> bool:
    """The run left a newer complete checkpoint than it started from, or ran long enough."""
    if attempt.last_checkpoint and attempt.last_checkpoint_at and (
            attempt.last_checkpoint != attempt.resumed_from
            or (attempt.started_at and attempt.last_checkpoint_at > attempt.started_at)):
        return True
    ran = (attempt.ended_at - attempt.started_at).total_seconds() if attempt.started_at and attempt.ended_at else 0
    return ran >= settings.PORTAL_CRASH_LOOP_PROGRESS_S


def requeues_in_a_row(job: Job, attempt: Attempt) -> int:
    """Automatic requeues that bought no progress, up to this (closed) failed run: 0 when it made
    progress. The cap and the backoff count these, not every requeue of the job's life."""
    if _progressed(attempt):
        return 0
    streak = 0
    for earlier in job.attempts.filter(number__lt=attempt.number).order_by("-number"):
        if earlier.outcome != Attempt.Outcome.REQUEUED or not earlier.failure_class:
            break   # not an automatic requeue (a person's, or none): the streak starts after it
        streak += 1
        if _progressed(earlier):
            break
    return streak


@dataclass(frozen=True)
class _Plan:
    outcome: str
    verdict: Verdict
    not_before: datetime | None = None
    note: str = ""


def _plan(job: Job, attempt: Attempt, verdict: Verdict, now: datetime) -> _Plan:
    """What to do about an infrastructure failure (see the module docstring)."""
    if not job.requeue:
        return _Plan(Attempt.Outcome.FAILED, verdict, note="submitted with --no-requeue: not requeued")
    loop = crash_loop(verdict, _earlier_failures(job, attempt.number, now), settings.PORTAL_CRASH_LOOP_NODES)
    if loop:
        why = f"failed the same way ({verdict.signature.rstrip(':')}) on {', '.join(loop)}: the job's own problem"
        moved = Verdict(FailureClass.APPLICATION, verdict.cause, f"{why}; {verdict.detail}"[:500],
                        verdict.failed_node, xid=verdict.xid)
        return _Plan(Attempt.Outcome.HELD, moved, note=f"portal: held, {why}")
    streak = requeues_in_a_row(job, attempt)
    if streak >= settings.PORTAL_MAX_AUTO_REQUEUES:
        note = f"portal: held after {streak} automatic requeues in a row without progress (last: {verdict.detail})"
        return _Plan(Attempt.Outcome.HELD, verdict, note=note)
    wait = backoff_s(streak, settings.PORTAL_REQUEUE_BACKOFF_S)
    return _Plan(Attempt.Outcome.REQUEUED, verdict, not_before=now + timedelta(seconds=wait) if wait else None)


def record_infrastructure_failure(job: Job, number: int, verdict: Verdict, *, started_at: datetime | None,
                                  nodes_list: str, gpus: int, ended_at: datetime | None = None) -> Recovery | None:
    """Record run `number` of `job` as an infrastructure failure and decide (requeue, hold, or
    nothing), writing the outbox row in the same transaction. Idempotent: a run already decided
    returns its existing row. Slurm is not called here: see finish_recovery."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        attempt = open_attempt(job, number, started_at=started_at, nodes_list=nodes_list, gpus=gpus)
        attempt = Attempt.objects.select_for_update().get(pk=attempt.pk)
        if attempt.outcome:
            return Recovery.objects.filter(attempt=attempt).first()
        _close(attempt, ended_at or now, succeeded=False)   # first: the plan reads its checkpoint
        plan = _plan(job, attempt, verdict, now)
        _set_verdict(attempt, plan.verdict)
        attempt.outcome = plan.outcome
        if plan.note:
            attempt.evidence = {**attempt.evidence, "note": plan.note}
        attempt.save()
        requeued = plan.outcome == Attempt.Outcome.REQUEUED
        Job.objects.filter(pk=job.pk).update(failure_class=plan.verdict.failure_class, failure_cause=plan.verdict.cause,
                                             auto_requeues=job.auto_requeues + requeued)
        if plan.outcome == Attempt.Outcome.FAILED:
            _notify(attempt, Notification.Kind.FAILED)
            return None
        exclude = sorted({verdict.failed_node} - {""} | open_fatal_nodes(now=now))
        recovery = Recovery.objects.create(job=job, attempt=attempt, cause=verdict.cause,
                                           failed_node=verdict.failed_node[:64], exclude_nodes=",".join(exclude)[:500],
                                           not_before=plan.not_before)
        _notify(attempt, Notification.Kind.REQUEUED if requeued else Notification.Kind.HELD)
    log.warning("recovery: job %s run %s %s (%s): %s", job.slurm_job_id, number, plan.outcome, verdict.cause,
                verdict.detail)
    return recovery


# ---------------------------------------------------------------- the outbox: acting in Slurm

def _claim(recovery_id: int, now: datetime) -> bool:
    """A conditional UPDATE: one worker at a time acts on a row, and a dead worker's claim expires."""
    return bool(Recovery.objects.filter(pk=recovery_id, done_at__isnull=True)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .update(claimed_until=now + CLAIM))


def finish_open_recoveries(*, job_ids: list[int] | None = None, jobs: Q | None = None) -> dict[int, str]:
    """Act on every open outbox row (or those of `job_ids`, or of the jobs matching `jobs`);
    {slurm job id: what happened}. One indexed query when there are none (recovery_open)."""
    rows = Recovery.objects.filter(done_at__isnull=True)
    if job_ids is not None:
        rows = rows.filter(job_id__in=job_ids)
    if jobs:
        rows = rows.filter(job__in=Job.objects.filter(jobs))
    now, results = timezone.now(), {}
    for recovery_id, slurm_id, created_at, last in rows.order_by("created_at").values_list(
            "pk", "job__slurm_job_id", "created_at", "result"):
        if created_at < now - GIVE_UP:
            _give_up(recovery_id, slurm_id, last, now)
            continue
        try:
            results[slurm_id] = finish_recovery(recovery_id)
        except SlurmUnavailable:
            raise  # the whole cycle retries later; the claim runs out
        except SlurmError as exc:
            log.error("recovery of job %s: Slurm refused: %s", slurm_id, exc.message)
            results[slurm_id] = f"refused: {exc.message}"
    return results


def _give_up(recovery_id: int, slurm_id: int, last: str, now: datetime) -> None:
    log.error("recovery of job %s given up after %s: %s", slurm_id, GIVE_UP, last)
    Recovery.objects.filter(pk=recovery_id, done_at__isnull=True).update(done_at=now, result=f"gave up: {last}"[:300])


def finish_recovery(recovery_id: int) -> str:
    """Carry out one outbox row in Slurm, from whatever point an earlier worker reached."""
    now = timezone.now()
    if not _claim(recovery_id, now):
        return "claimed elsewhere or done"
    recovery = Recovery.objects.select_related("job", "attempt").get(pk=recovery_id)
    deadline = time.monotonic() + FINISH_WAIT_S
    try:
        result = _act(recovery, now)
        while FINISHING in result and time.monotonic() < deadline:
            time.sleep(0.3)
            result = _act(recovery, timezone.now())
    except SlurmNotFound:
        result = "done: Slurm no longer has the job"
    if result.startswith("done"):
        Recovery.objects.filter(pk=recovery_id).update(done_at=timezone.now(), result=result[:300],
                                                       claimed_until=None)
    else:
        Recovery.objects.filter(pk=recovery_id).update(result=result[:300], claimed_until=None)
    return result


def _act(recovery: Recovery, now: datetime) -> str:
    job, attempt = recovery.job, recovery.attempt
    hold = attempt.outcome == Attempt.Outcome.HELD
    live = gateway.job_detail(job.slurm_job_id)
    if live.restarts <= attempt.number and live.state in LEFT_ALONE:
        return f"done: the job ended {live.state} meanwhile; left alone"
    if live.restarts <= attempt.number and live.state != "PENDING":
        # Still the failed run (running on the bad node, or ended): take it back to the queue.
        if not live.requeue:
            return "done: the job does not allow requeue"
        gateway.requeue_job_now(job.slurm_job_id, hold=hold)
        live = gateway.job_detail(job.slurm_job_id)
    if hold:
        return _ensure_held(job.slurm_job_id, live, attempt.evidence.get("note", "portal: held"))
    return _ensure_placed(recovery, live, now)


def _ensure_held(slurm_id: int, live: JobDetail, note: str) -> str:
    if live.state == "COMPLETING":
        return f"waiting: {FINISHING} on {live.nodes}"  # an epilog failure may requeue it again
    if live.state != "PENDING":
        return f"waiting: job is {live.state}"
    if not live.held or live.admin_comment != note:
        gateway.hold_job_now(slurm_id, note)
        live = gateway.job_detail(slurm_id)
    return f"done: held (priority {live.priority}, {live.reason})" if live.held else "waiting: not held yet"


def _excluded(recovery: Recovery, live: JobDetail) -> tuple[str, str | None]:
    """ExcNodeList to set (the job's own exclusions, the failed node, every node with an open
    fatal finding) and ReqNodeList (None: leave it; else without the excluded nodes)."""
    bad = set(expand_hostlist(recovery.exclude_nodes)) | open_fatal_nodes()
    if recovery.failed_node:
        bad.add(recovery.failed_node)
    exclude = sorted(set(expand_hostlist(live.excluded_nodes)) | bad)
    required = expand_hostlist(live.required_nodes)
    keep = None if not bad & set(required) else ",".join(n for n in required if n not in bad)
    return ",".join(exclude), keep


def _not_pending(recovery: Recovery, live: JobDetail) -> str:
    """Why the job cannot be placed now ("" when it is pending after the requeue)."""
    if live.restarts <= recovery.attempt.number:
        return f"waiting: Slurm has not requeued it yet ({live.state})"
    if live.state == "COMPLETING":
        # The old run is being cleaned up. Its epilog may still fail on the bad node, and Slurm
        # then requeues the job once more, resetting its start to ~120 s from now: place it after.
        return f"waiting: {FINISHING} on {live.nodes}"
    if live.state == "PENDING":
        return ""
    if recovery.failed_node and recovery.failed_node in expand_hostlist(live.nodes):
        return f"waiting: {live.state} on {live.nodes} again"
    return f"done: {live.state} on {live.nodes}"


def _ensure_placed(recovery: Recovery, live: JobDetail, now: datetime) -> str:
    blocked = _not_pending(recovery, live)
    if blocked:
        return blocked
    exclude, required = _excluded(recovery, live)
    start = recovery.not_before if recovery.not_before and recovery.not_before > now else None
    if _placed(live, exclude, start or now):
        return f"done: pending, ExcNodeList={live.excluded_nodes}, eligible {live.eligible_time:%H:%M:%S}"
    if live.reason in PROLOG_HOLD_REASONS:
        gateway.release_job_now(live.job_id)
    gateway.place_requeued_job(live.job_id, exclude=exclude, required=required, start=start)
    after = gateway.job_detail(live.job_id)
    if after.state == "PENDING" and not _placed(after, exclude, start or now):
        return f"waiting: Slurm shows ExcNodeList={after.excluded_nodes or '(null)'}, eligible {after.eligible_time}"
    return f"done: {after.state}, ExcNodeList={after.excluded_nodes}"


def _placed(live: JobDetail, exclude: str, start: datetime) -> bool:
    """Slurm holds the exclusions and will start the job by `start` (give or take a second)."""
    missing = set(expand_hostlist(exclude)) - set(expand_hostlist(live.excluded_nodes))
    eligible = live.eligible_time is None or live.eligible_time <= start + ELIGIBLE_SLACK
    return not missing and eligible


# ---------------------------------------------------------------- evacuating a node

def evacuate_node(node_name: str, *, cause: str, detail: str) -> list[int]:
    """Record and requeue every job running on `node_name` now (a fatal finding, a hung node),
    portal and sbatch jobs alike; Slurm job ids acted on. Idempotent: a run already recorded is
    not recorded again, and its open outbox row is finished."""
    live = gateway.jobs_on_node(node_name)
    if not live:
        return []
    rows = _rows_for(live)
    acted, job_pks = [], []
    for info in live:
        job = rows.get(info.job_id)
        if job is None:
            log.warning("evacuate %s: job %s belongs to no portal team; left to Slurm", node_name, info.job_id)
            continue
        verdict = infrastructure(cause, f"{node_name}: {detail}", node_name)
        recovery = record_infrastructure_failure(job, info.restarts, verdict, started_at=info.start_time,
                                                 nodes_list=info.nodes, gpus=attempt_gpus(job))
        if recovery is not None:  # None: the job asked not to be requeued
            acted.append(info.job_id)
            job_pks.append(job.pk)
    finish_open_recoveries(job_ids=job_pks)
    return acted


def _rows_for(live: list) -> dict[int, Job]:
    """Job rows for these Slurm jobs; jobs the tracker has not adopted yet get one tracker
    cycle first (its lock keeps adoption single; a concurrent cycle adopts them for us)."""
    from portal.jobs import tracking  # noqa: PLC0415 - the tracker imports much; only needed here

    ids = {info.job_id for info in live}
    rows = _rows(ids)
    if ids - rows.keys():
        for _ in range(20):
            if tracking.track_jobs().ran:
                break
            time.sleep(0.25)
        rows = _rows(ids)
    return rows


def _rows(ids: set[int]) -> dict[int, Job]:
    active = Job.objects.filter(slurm_job_id__in=ids).exclude(state__in=["COMPLETED", "SUBMIT_FAILED"]) \
        .select_related("owner").order_by("-id")
    rows: dict[int, Job] = {}
    for job in active:
        rows.setdefault(job.slurm_job_id, job)
    return rows


__all__ = ["evacuate_node", "finish_open_recoveries", "finish_recovery", "record_infrastructure_failure",
           "xid_in"]
