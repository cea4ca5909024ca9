"""The recovery cycle (beat, every PORTAL_RECOVER_SECONDS): attempts from what the tracker saw.

The tracker (portal/jobs/tracking.py) writes state changes in bulk and stamps state_changed_at
(also when only the restart count moved). A cycle reads the jobs stamped since its cursor
(minus an overlap, since the tracker commits a little after it stamps) and, for each:

* running: the attempt for its restart count exists (opened with the checkpoint it resumed from);
* restart count above an attempt that has no outcome: that run was requeued behind the worker's
  back (Slurm's NODE_FAIL requeue, a prolog failure, a person). sacct -D tells which, the node's
  state and findings tell why; an infrastructure failure is then finished like the worker's own
  (exclusions, start now instead of in ~120 s) or held under the crash-loop rules;
* ended: the last attempt is closed and classified; an application failure is stored with its
  evidence and its owner told, an infrastructure one (FAILED while its GPU failed) requeued.

Then every open outbox row is finished (services.finish_open_recoveries). When nothing changed
a cycle costs two indexed queries and three Redis calls. Safe to run twice at once: a Redis
lock makes the second return, and every step is idempotent.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import redis
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from portal.infra.cache import cache_client
from portal.jobs import output
from portal.jobs.models import Job, JobEvent
from portal.recovery import classify, services
from portal.recovery.models import Attempt
from portal.slurm import gateway
from portal.slurm.errors import SlurmUnavailable
from portal.slurm.parse import expand_hostlist
from portal.slurm.types import FINISHED_STATES, RunRecord

log = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=10)       # the tracker stamps a change before it commits it
FIRST_LOOK = timedelta(minutes=10)    # how far back a cycle with no cursor looks
# Runs that ended longer ago than this are recorded but not acted on or notified about (e.g.
# the history of a job adopted late): the moment to move them is gone.
RECENT = timedelta(minutes=10)
# sacct is normally a second behind slurmctld; after this long a requeue it never shows is
# classified from the node's state alone.
SACCT_PATIENCE = timedelta(seconds=15)
LOCK_TIMEOUT_S = 300
ON_NODES = frozenset({"RUNNING", "CONFIGURING", "SUSPENDED"})
NOT_STARTED_AGAIN = frozenset({"PENDING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
TAIL_LINES = 20
DOWN_FLAGS = frozenset({"DRAIN", "NOT_RESPONDING", "FAIL"})
# States sacct shows for a run that has not ended yet (or whose ending slurmdbd has not stored).
RUN_GOING = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"})


@dataclass
class RecoverResult:
    ran: bool = True
    looked_at: int = 0
    opened: int = 0
    closed: int = 0
    waiting: int = 0                       # jobs whose requeue sacct does not show yet
    acted: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def recover_jobs(*, only: Q | None = None) -> RecoverResult:
    """One cycle. `only` narrows the jobs looked at (tests on a shared cluster act on their own)."""
    lock = _redis().lock(_key("lock"), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire(blocking=False):
        return RecoverResult(ran=False)
    try:
        return _cycle(RecoverResult(), only or Q())
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def reset_recovery() -> None:
    _redis().delete(_key("memo"))


def _cycle(result: RecoverResult, only: Q) -> RecoverResult:
    memo = _load_memo()
    now = timezone.now()
    cursor = datetime.fromisoformat(memo["cursor"]) if memo.get("cursor") else now - FIRST_LOOK
    retry = set(memo.get("retry", []))
    jobs = list(Job.objects.filter(only, state_changed_at__gte=cursor - OVERLAP, slurm_job_id__isnull=False)
                .select_related("owner"))
    if retry:
        seen = {job.pk for job in jobs}
        jobs += Job.objects.filter(only, pk__in=retry - seen).select_related("owner")
    if jobs:
        memo["retry"] = sorted(_observe(jobs, result, now))
        newest = max((job.state_changed_at for job in jobs if job.state_changed_at), default=None)
        if newest and newest > cursor:
            memo["cursor"] = newest.isoformat()
    elif not memo.get("cursor"):
        memo["cursor"] = now.isoformat()
    _save_memo(memo)
    result.acted = services.finish_open_recoveries(jobs=only)
    return result


# ---------------------------------------------------------------- observing jobs

def _observe(jobs: list[Job], result: RecoverResult, now: datetime) -> set[int]:
    """Bring each job's attempts up to date; the pks still waiting for sacct."""
    result.looked_at = len(jobs)
    attempts: dict[int, dict[int, Attempt]] = {}
    for attempt in Attempt.objects.filter(job__in=jobs).select_related("job"):
        attempts.setdefault(attempt.job_id, {})[attempt.number] = attempt
    stale = [job for job in jobs if _unsettled_runs(job, attempts.get(job.pk, {}))]
    runs = gateway.job_runs([job.slurm_job_id for job in stale], since=_earliest_submit(stale)) if stale else {}
    waiting = set()
    for job in jobs:
        mine = attempts.get(job.pk, {})
        if job in stale and not _settle_requeued_runs(job, mine, runs.get(job.slurm_job_id, []), now, result):
            waiting.add(job.pk)
        _observe_current(job, mine, result, now)
    result.waiting = len(waiting)
    return waiting


def _earliest_submit(jobs: list[Job]) -> datetime | None:
    """Where sacct should start looking: a minute before the first of these jobs was submitted."""
    times = [job.submit_time or job.created_at for job in jobs]
    return min(t for t in times if t) - timedelta(minutes=1) if any(times) else None


def _unsettled_runs(job: Job, mine: dict[int, Attempt]) -> list[int]:
    """Earlier runs (number < restart count) with no outcome yet: they ended by a requeue."""
    return [k for k in range(job.restart_count) if k not in mine or not mine[k].outcome]


def _observe_current(job: Job, mine: dict[int, Attempt], result: RecoverResult, now: datetime) -> None:
    number = job.restart_count
    if job.state in ON_NODES and job.start_time:
        if number not in mine:
            mine[number] = services.open_attempt(job, number, started_at=job.start_time, nodes_list=job.nodes_list,
                                                 gpus=services.attempt_gpus(job))
            result.opened += 1
        return
    attempt = mine.get(number)
    if job.state not in FINISHED_STATES or (attempt is not None and attempt.outcome):
        return
    if attempt is None and not (job.start_time and job.nodes_list):
        return  # ended without running (cancelled while pending): no run to record
    _close_ended(job, number, attempt, now)
    result.closed += 1


def _close_ended(job: Job, number: int, attempt: Attempt | None, now: datetime) -> None:
    nodes = expand_hostlist(job.nodes_list)
    ended_at = job.end_time or now
    faults = services.faults_on(nodes, job.start_time, ended_at)
    verdict = classify.ended(job.state, job.exit_code, None, nodes=nodes, faults=faults)
    if attempt is None:
        attempt = services.open_attempt(job, number, started_at=job.start_time, nodes_list=job.nodes_list,
                                        gpus=services.attempt_gpus(job))
    if not verdict.failure_class:
        services.record_success(attempt, ended_at)
    elif verdict.infrastructure:
        _infrastructure(job, verdict, attempt, ended_at, now)
    else:
        services.record_application_failure(attempt, ended_at, verdict, _evidence(job, nodes, ended_at))


def _infrastructure(job: Job, verdict: classify.Verdict, attempt: Attempt, ended_at: datetime, now: datetime) -> None:
    if now - ended_at > RECENT:
        services.record_quiet_end(attempt, ended_at, verdict)  # history: nothing left to move
        return
    services.record_infrastructure_failure(job, attempt.number, verdict, started_at=attempt.started_at,
                                           nodes_list=attempt.nodes_list, gpus=attempt.gpus, ended_at=ended_at)


def _settle_requeued_runs(job: Job, mine: dict[int, Attempt], runs: list[RunRecord], now: datetime,
                          result: RecoverResult) -> bool:
    """Record the runs that ended by a requeue the worker did not make. False: sacct does not
    show them yet (the job is looked at again next cycle)."""
    for number in _unsettled_runs(job, mine):
        run = runs[number] if number < len(runs) else None
        patience_over = job.state_changed_at is None or now - job.state_changed_at > SACCT_PATIENCE
        # slurmdbd can still hold the run as RUNNING (no end) for a moment after slurmctld requeued
        # it: that is not its ending yet (seen: classified "requeued outside the portal" and left
        # pending for Slurm's ~120 s).
        if not _ended(run) and not patience_over:
            return False
        _settle_run(job, number, mine.get(number), run, now)
        result.closed += 1
    return True


def _settle_run(job: Job, number: int, attempt: Attempt | None, run: RunRecord | None, now: datetime) -> None:
    started = run.start_time if run else (attempt.started_at if attempt else None)
    nodes_list = (run.nodes if run else "") or (attempt.nodes_list if attempt else "")
    ended_at = (run.end_time if run else None) or now
    nodes = expand_hostlist(nodes_list)
    faults = services.faults_on(nodes, started, ended_at)
    verdict = classify.requeued(run.state if _ended(run) else "", nodes=nodes, elapsed_s=run.elapsed_s if run else 0,
                                out_of_service=_out_of_service(nodes), faults=faults,
                                by_person=_requeued_by_person(job, started))
    gpus = services.attempt_gpus(job, run.gpus if run else 0)
    attempt = attempt or services.open_attempt(job, number, started_at=started, nodes_list=nodes_list, gpus=gpus)
    # Only the run just before the current one can still be moved, and only while the job has
    # not started again (COMPLETING: Slurm is still cleaning up the run it requeued).
    movable = number == job.restart_count - 1 and job.state in NOT_STARTED_AGAIN and now - ended_at <= RECENT
    if verdict.infrastructure and movable:
        services.record_infrastructure_failure(job, number, verdict, started_at=started, nodes_list=nodes_list,
                                               gpus=gpus, ended_at=ended_at)
    else:
        services.record_quiet_end(attempt, ended_at, verdict)
        if verdict.failure_class:
            Attempt.objects.filter(pk=attempt.pk).update(failure_class=verdict.failure_class, cause=verdict.cause,
                                                         failed_node=verdict.failed_node[:64])


def _ended(run: RunRecord | None) -> bool:
    """sacct shows how the run ended: an end time and a final state (REQUEUED is one: the state a
    run ended by a requeue keeps, e.g. after a prolog failure)."""
    return run is not None and run.end_time is not None and run.state not in RUN_GOING


def _out_of_service(nodes: list[str]) -> dict[str, str]:
    """The run's nodes that Slurm shows drained, down or not responding now, with the reason."""
    if not nodes:
        return {}
    try:
        listed = gateway.list_nodes()
    except SlurmUnavailable:
        return {}
    return {node.name: node.reason or node.state for node in listed if node.name in nodes
            and (node.state in ("DOWN", "FAIL") or DOWN_FLAGS & set(node.flags))}


def _requeued_by_person(job: Job, started: datetime | None) -> bool:
    since = (started or job.created_at) - timedelta(seconds=5)
    return job.events.filter(kind=JobEvent.Kind.ACTION, name="requeue", ok=True, at__gte=since).exists()


def _evidence(job: Job, nodes: list[str], ended_at: datetime) -> dict:
    """What an application failure is shown with: output tails and the nodes' health then."""
    evidence: dict = {"node_health": services.node_health(nodes, job.start_time, ended_at)}
    streams = ["stdout"] + (["stderr"] if job.stderr_path and job.stderr_path != job.stdout_path else [])
    for stream in streams:
        try:
            evidence[f"{stream}_tail"] = output.read_output(job, stream, tail=TAIL_LINES).text[-4000:]
        except output.OutputUnavailable as exc:
            evidence[f"{stream}_tail"] = ""
            evidence[f"{stream}_unavailable"] = str(exc)
    return evidence


# ---------------------------------------------------------------- memo in Redis

def _redis() -> redis.Redis:
    return cache_client()


def _key(name: str) -> str:
    return f"portal:recovery:{connection.settings_dict['NAME']}:{name}"


def _load_memo() -> dict:
    raw = _redis().get(_key("memo"))
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _save_memo(memo: dict) -> None:
    _redis().set(_key("memo"), json.dumps(memo), ex=24 * 3600)
