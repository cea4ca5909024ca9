"""The job tracker: keeps Job rows in step with Slurm, about once a second, cheaply.

A cycle asks slurmctld one thing:

* quiet (the queue has not changed for BUSY_WINDOW_S) and small: "anything new since the
  last sweep?" slurmrestd answers `update_time` with a 304 that costs almost nothing, and
  the cycle stops;
* otherwise: straight to a narrow squeue sweep (the fields we need, as text: several times
  cheaper than JSON). Asking first would be a second query, and a "yes" arrives with the
  whole queue as JSON, which for a queue of thousands costs more than the sweep itself.

So only the first change after a quiet spell costs two queries (the probe, then the sweep),
and only while the queue is small (PROBE_MAX_JOBS). Jobs that had ended by the previous
sweep are counted but not parsed or looked up (MinJobAge keeps them queued for minutes); a
full reconcile at least every FULL_SWEEP_S looks at every job again, so a missed change or
a lost Redis memo heals within a minute.

The sweep is diffed against the rows the database holds for active jobs and only the
differences are written, each state change with a JobEvent for the job's timeline. Jobs
submitted with plain sbatch are adopted, portal jobs whose Slurm id never reached the
database are recovered by the UUID in their comment, and ended jobs are completed from sacct
on later cycles (sacct lags slurmctld). A Redis lock keeps cycles from overlapping, and the
diff makes a repeated cycle a no-op.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.infra.cache import cache_client
from portal.jobs import explain, list_cache, states
from portal.jobs.models import Job, JobEvent
from portal.jobs.services import CLOCK_SLACK, COMMENT_PREFIX, SUBMIT_FAILED
from portal.slurm import gateway
from portal.slurm.errors import SlurmUnavailable
from portal.slurm.gres import gpu_count, gpu_type
from portal.slurm.types import FINISHED_STATES, AccountingRecord, JobInfo, QueueSweep
from portal.teams.models import Team

log = logging.getLogger(__name__)

SUBMIT_FAILED_REASON = "The portal stopped before Slurm confirmed this job; it was never queued."
REQUEUED = "REQUEUED"
FINAL_STATES = states.ENDED
# Listing the active states lets the active-row query use the state index.
ACTIVE_STATES = states.SLURM_ACTIVE

BUSY_WINDOW_S = 15          # keep sweeping this long after the queue last changed
PROBE_MAX_JOBS = 500        # above this, a "yes" from the probe costs more than a sweep
FULL_SWEEP_S = 60           # sweep at least this often, whatever the probe says
CLOCK_MARGIN_S = 2          # update_time is whole seconds; also covers clock skew
LOCK_TIMEOUT_S = 120        # longer than the slowest cycle (two CLI calls at their timeout)
OUTBOX_GRACE = timedelta(minutes=2)
SAME_JOB_SLACK = timedelta(minutes=5)
JUST_SUBMITTED = timedelta(seconds=30)
# Every cycle asks sacct about jobs that ended in the last ACCOUNTING_RECENT; full reconciles
# also about older ones, up to ACCOUNTING_WINDOW, after which the tracker stops asking.
ACCOUNTING_RECENT = timedelta(minutes=2)
ACCOUNTING_WINDOW = timedelta(hours=1)
# sacct is normally a second behind. A job cancelled while pending after a requeue stays
# REQUEUED there for good, so after this long squeue's final state stands with sacct's figures.
ACCOUNTING_PATIENCE = timedelta(minutes=1)
SACCT_BATCH = 1000

_TABLE = Job._meta.db_table
TRACKED = ("state", "reason", "nodes_list", "start_time", "end_time", "exit_code", "restart_count")


@dataclass
class TrackResult:
    ran: bool = True                 # False: another cycle held the lock, so this one did nothing
    slurm_queried: bool = False
    queries: list[str] = field(default_factory=list)   # Slurm calls in order: probe, sweep, sacct
    seen: int = 0                    # jobs in the sweep
    changed: int = 0                 # existing rows whose tracked fields were written
    adopted: int = 0                 # rows created for sbatch jobs or recovered by UUID
    finished: int = 0                # jobs that reached a final state this cycle
    accounted: int = 0               # rows completed from sacct
    unmanaged: int = 0               # Slurm jobs whose account is no portal team (or no login user)
    skipped: int = 0                 # jobs carrying the UUID of a row that tracks another Slurm job
    submit_failed: int = 0           # outbox rows Slurm never received
    # (owner id, team id) of every row written: cached job-list pages showing them rebuild.
    touched: set[tuple[int, int]] = field(default_factory=set)

    def query(self, name: str) -> None:
        self.slurm_queried = True
        self.queries.append(name)

    def touch(self, rows: Iterable[_Row | Job]) -> None:
        self.touched.update((row.owner_id, row.team_id) for row in rows)

    def as_dict(self) -> dict:
        data = asdict(self)
        del data["touched"]
        return data


@dataclass
class _Memo:
    """What one cycle leaves for the next, in Redis."""

    since: int = 0                   # slurmctld time the last sweep covered
    busy_until: float = 0.0
    swept_at: float = 0.0
    reconciled_at: float = 0.0       # last sweep that looked at every job
    digest: str = ""
    queued: int = 0                  # jobs in the last sweep


@dataclass(slots=True)
class _Row:
    """The fields of a Job row the tracker reads."""

    pk: int
    slurm_job_id: int | None
    uuid: uuid.UUID
    submit_time: datetime | None
    state: str
    reason: str
    nodes_list: str
    start_time: datetime | None
    end_time: datetime | None
    exit_code: int | None
    restart_count: int
    state_changed_at: datetime | None
    owner_id: int
    team_id: int
    pending_action: str
    pending_action_at: datetime | None

    @property
    def tracked(self) -> tuple:
        return (self.state, self.reason, self.nodes_list, self.start_time, self.end_time,
                self.exit_code, self.restart_count)


_ROW_FIELDS = ("pk", "slurm_job_id", "uuid", "submit_time", *TRACKED, "state_changed_at", "owner_id", "team_id",
               "pending_action", "pending_action_at")


@dataclass
class _Plan:
    """What a sweep means for the database, before anything is written."""

    matched: set[int] = field(default_factory=set)
    updates: list[tuple[_Row, JobInfo]] = field(default_factory=list)
    recovered: list[tuple[_Row, JobInfo]] = field(default_factory=list)
    new: list[JobInfo] = field(default_factory=list)


# ---------------------------------------------------------------- the cycle

def track_jobs() -> TrackResult:
    """One tracking cycle. Returns at once (ran=False) while another cycle holds the lock."""
    lock = _redis().lock(_key("lock"), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire(blocking=False):
        return TrackResult(ran=False)
    result = TrackResult()
    try:
        return _cycle(result)
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()  # it may have expired under a pathologically slow cycle
        # Also after a failed cycle: what it did write before failing must not stay hidden.
        list_cache.changed(result.touched)


def reset_tracker() -> None:
    """Forget the memo, so the next cycle sweeps in full (e.g. after restoring the database)."""
    _redis().delete(_key("memo"))


def _cycle(result: TrackResult) -> TrackResult:
    memo = _load_memo()
    started = timezone.now()
    read = _read_queue(memo, result)
    vanished: list[_Row] = []
    if read is not None:
        with transaction.atomic():
            vanished = _apply_sweep(*read, result, started)
    thorough = read is not None and read[1] is None
    if thorough:  # every job's comment is at hand only in a full reconcile
        vanished += _settle_outbox({t for j in read[0].jobs if (t := _token(j.comment))}, result, started)
    _save_memo(memo)  # only once the sweep is written: a failed cycle is simply repeated
    try:
        _complete_from_accounting(result, vanished, ended_before=started, thorough=thorough)
    except SlurmUnavailable as exc:
        # slurmdbd down while slurmctld is up: states stay fresh, the figures come later.
        log.warning("sacct unavailable; accounting waits for a later cycle: %s", exc.message)
    return result


def _read_queue(memo: _Memo, result: TrackResult) -> tuple[QueueSweep, datetime | None] | None:
    """The queue when it may have changed since the last sweep (None when Slurm says it has not),
    and the time before which ended jobs were already dealt with (None: look at every job)."""
    now = time.time()
    full = now - memo.reconciled_at >= FULL_SWEEP_S
    if now >= memo.busy_until and not full and memo.queued <= PROBE_MAX_JOBS:
        result.query("probe")
        if not _queue_may_have_changed(memo.since):
            return None
        memo.busy_until = now + BUSY_WINDOW_S
    result.query("sweep")
    # MinJobAge keeps ended jobs queued for minutes, and the previous sweep saw those that
    # had ended by then. A full reconcile looks at every job again, in case.
    settled = None if full else datetime.fromtimestamp(memo.swept_at - CLOCK_MARGIN_S, tz=UTC)
    sweep = gateway.sweep_jobs(skip_ended_before=settled)
    _remember_sweep(memo, sweep, now, full)
    return sweep, settled


def _queue_may_have_changed(since: int) -> bool:
    """slurmrestd's cheap answer; without slurmrestd, squeue still works: sweep (as when busy,
    so the next probe waits for BUSY_WINDOW_S instead of costing every cycle a failed call)."""
    try:
        return gateway.jobs_changed_since(since)
    except SlurmUnavailable as exc:
        log.warning("slurmrestd probe failed, sweeping with squeue instead: %s", exc.message)
        return True


def _remember_sweep(memo: _Memo, sweep: QueueSweep, now: float, full: bool) -> None:
    if sweep.digest != memo.digest:
        memo.busy_until = now + BUSY_WINDOW_S
    # slurmctld compares whole seconds; the margin also covers clock skew between hosts.
    memo.digest, memo.swept_at, memo.since = sweep.digest, now, int(now) - CLOCK_MARGIN_S
    memo.queued = len(sweep.queued_ids)
    if full:
        memo.reconciled_at = now


def _apply_sweep(sweep: QueueSweep, settled: datetime | None, result: TrackResult, now: datetime) -> list[_Row]:
    """Write what differs; return the active rows Slurm no longer knows (purged after MinJobAge)."""
    result.seen = len(sweep.queued_ids)
    active = _rows(Job.objects.filter(state__in=ACTIVE_STATES, slurm_job_id__isnull=False))
    by_id, by_uuid = _index_rows(sweep.jobs, active)
    plan = _Plan()
    for job in sweep.jobs:
        _classify(job, by_id, by_uuid, plan, result)
    _write_changes(plan.updates, result, now)
    _recover_by_uuid(plan.recovered, result, now)
    _adopt(plan.new, result, now)
    return _vanished(active, plan.matched, sweep.queued_ids, now)


def _vanished(active: list[_Row], matched: set[int], queued_ids: frozenset[int], now: datetime) -> list[_Row]:
    """Active rows whose job slurmctld no longer holds: it ended and was purged while we looked away."""
    # A row whose id is still queued but unmatched is either a job skipped as long ended
    # (the next full reconcile matches it) or one whose id a rebuilt cluster gave to another
    # job; sacct would answer for that other job, so neither is asked about.
    vanished = [row for row in active if row.pk not in matched
                and row.slurm_job_id not in queued_ids and _long_submitted(row, now)]
    # Normally a handful. Rows sacct never heard of (a rebuilt cluster) would otherwise make
    # every sweep ask about all of them: ask about one batch, a different one each time.
    return random.sample(vanished, SACCT_BATCH) if len(vanished) > SACCT_BATCH else vanished


# ---------------------------------------------------------------- matching

def _rows(queryset: QuerySet) -> list[_Row]:
    return [_Row(*values) for values in queryset.values_list(*_ROW_FIELDS)]


def _index_rows(jobs: Iterable[JobInfo], active: list[_Row]) -> tuple[dict[int, list[_Row]], dict[str, _Row]]:
    """Rows by Slurm id and by UUID: the active ones, plus any row an unmatched queued job may be."""
    by_id: dict[int, list[_Row]] = {}
    for row in active:
        by_id.setdefault(row.slurm_job_id, []).append(row)
    unmatched = [job for job in jobs if job.job_id not in by_id]
    ids = [job.job_id for job in unmatched]
    tokens = [t for job in unmatched if (t := _token(job.comment))]
    others = _rows(Job.objects.filter(Q(slurm_job_id__in=ids) | Q(uuid__in=tokens))) if unmatched else []
    for row in others:
        if row.slurm_job_id is not None:
            by_id.setdefault(row.slurm_job_id, []).append(row)
    return by_id, {str(row.uuid): row for row in others}


def _token(comment: str) -> str | None:
    """The portal UUID in a job's Slurm comment (see services.portal_comment), if any."""
    if not comment.startswith(COMMENT_PREFIX):
        return None
    try:
        return str(uuid.UUID(comment.removeprefix(COMMENT_PREFIX).strip()))
    except ValueError:
        return None


def _same_job(row: _Row, job: JobInfo) -> bool:
    """A Slurm id alone is not an identity: a rebuilt cluster hands the same ids out again."""
    token = _token(job.comment)
    if token:
        return token == str(row.uuid)
    if row.submit_time is None or job.submit_time is None or job.restarts > 0:
        return True  # a requeue moves Slurm's submit time forward, so it proves nothing
    return row.submit_time >= job.submit_time - SAME_JOB_SLACK


def _classify(job: JobInfo, by_id: dict[int, list[_Row]], by_uuid: dict[str, _Row],
              plan: _Plan, result: TrackResult) -> None:
    row = next((r for r in by_id.get(job.job_id, ()) if _same_job(r, job)), None)
    if row is not None:
        plan.matched.add(row.pk)
        # Both ended: the row may hold sacct's final word, which outranks squeue's.
        both_final = row.state in FINAL_STATES and job.finished
        if (_observed(job) != row.tracked and not both_final) or _control_done(row, job):
            plan.updates.append((row, job))
        return
    token = _token(job.comment)
    owner_row = by_uuid.get(token) if token else None
    if owner_row is None:
        plan.new.append(job)
    elif owner_row.slurm_job_id is None:
        plan.matched.add(owner_row.pk)
        plan.recovered.append((owner_row, job))
    else:
        result.skipped += 1


def _control_done(row: _Row, job: JobInfo) -> bool:
    """Slurm shows the effect of the control marked on the row (services.control_job)."""
    action = row.pending_action
    if not action:
        return False
    if job.finished:
        return True  # whatever was asked, nothing more will happen to an ended job
    held = job.reason in states.HELD_REASONS
    return {"hold": held, "release": not held, "requeue": job.restarts > row.restart_count}.get(action, False)


def _observed(job: JobInfo) -> tuple:
    """The tracked fields as Slurm reports them, in TRACKED order and the columns' sizes."""
    return (job.state, job.reason[:200], job.nodes[:500], job.start_time, job.end_time,
            job.exit_code, job.restarts)


def _long_submitted(row: _Row, now: datetime) -> bool:
    # A job submitted while the sweep ran is in the database but not yet in the sweep.
    return row.submit_time is None or row.submit_time < now - JUST_SUBMITTED


# ---------------------------------------------------------------- writing the differences

# One statement for any number of rows, its values passed as one JSON document: a thousand
# UPDATEs (even pipelined), Django's bulk_update or one array parameter per column all cost
# several times the CPU, here and in PostgreSQL.
_UPDATE_SQL = f"""
UPDATE {_TABLE} AS j SET state = v.state, reason = v.reason, nodes_list = v.nodes_list,
    start_time = v.start_time, end_time = v.end_time, exit_code = v.exit_code,
    restart_count = v.restart_count, state_changed_at = COALESCE(v.moved_at, j.state_changed_at),
    accounted = j.accounted AND v.ended,
    pending_action = CASE WHEN v.ended OR v.done_at = j.pending_action_at THEN '' ELSE j.pending_action END,
    pending_action_at = CASE WHEN v.ended OR v.done_at = j.pending_action_at THEN NULL
        ELSE j.pending_action_at END,
    updated_at = %s
FROM json_to_recordset(%s::json) AS v(id bigint, state text, reason text, nodes_list text,
    start_time timestamptz, end_time timestamptz, exit_code integer, restart_count integer,
    moved_at timestamptz, ended boolean, done_at timestamptz)
WHERE j.id = v.id"""  # noqa: S608 - our own table name; every value is a parameter

# WITH ORDINALITY keeps a cycle's events for one job in order (REQUEUED before PENDING).
_EVENT_SQL = f"""
INSERT INTO {JobEvent._meta.db_table} (job_id, at, kind, name, detail, ok)
SELECT e.job_id, %s, %s, e.name, e.detail, true
FROM ROWS FROM (json_to_recordset(%s::json) AS (job_id bigint, name text, detail text))
    WITH ORDINALITY AS e(job_id, name, detail, n)
ORDER BY e.n"""  # noqa: S608 - our own table name; every value is a parameter


def _execute_json(sql: str, now: datetime, rows: list[dict], *extra) -> None:
    """Run `sql` with `now`, any `extra` values, then `rows` as one JSON array."""
    if rows:
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, *extra, json.dumps(rows, default=str)])


def _insert_events(events: list[dict]) -> None:
    # Stamped when written, not when the cycle began: the timeline must not put a start
    # before the submission the web request recorded while this cycle read the queue.
    _execute_json(_EVENT_SQL, timezone.now(), events, JobEvent.Kind.STATE)


def _write_changes(updates: list[tuple[_Row, JobInfo]], result: TrackResult, now: datetime) -> None:
    rows, events = [], []
    for row, job in updates:
        moved = job.state != row.state
        # accounted stays only while the job stays ended; a requeued job is accounted again.
        # done_at: the control this confirms, so that a newer one asked meanwhile stays marked.
        # A requeue that went unseen (PENDING again with one more restart) also counts as a move:
        # the recovery cycle reads jobs by state_changed_at.
        stamp = moved or job.restarts != row.restart_count
        rows.append({"id": row.pk, **_tracked_fields(job), "moved_at": now if stamp else None,
                     "ended": job.finished, "done_at": row.pending_action_at if _control_done(row, job) else None})
        events += _timeline(row.pk, row, job)
        result.finished += moved and job.finished and row.state not in FINAL_STATES
    _execute_json(_UPDATE_SQL, now, rows)
    _insert_events(events)
    result.changed += len(updates)
    result.touch(row for row, _ in updates)


def _timeline(pk: int, row: _Row, job: JobInfo) -> list[dict]:
    """State events for the job page: one per state change and one per requeue."""
    events = [_event(pk, REQUEUED, f"Restart {n}") for n in range(row.restart_count + 1, job.restarts + 1)]
    if job.state in (row.state, REQUEUED):
        return events  # a REQUEUED state is already told by the restart count
    if job.finished and job.start_time and row.state in ("", "PENDING"):
        # It started and ended between two cycles; the timeline should still show the start.
        events.append(_event(pk, "RUNNING", f"Started {job.start_time:%Y-%m-%d %H:%M:%S} UTC on {job.nodes}"))
    return [*events, _event(pk, job.state, _state_detail(job))]


def _state_detail(job: JobInfo) -> str:
    if job.state == "RUNNING":
        return f"on {job.nodes}"
    if job.finished and (words := explain.ending(job.state, job.exit_code, job.time_limit_min)):
        return words
    return job.reason


def _event(pk: int, name: str, detail: str = "") -> dict:
    """A state event for the job's timeline, as a row for _insert_events."""
    return {"job_id": pk, "name": name[:32], "detail": detail[:500]}


def _tracked_fields(job: JobInfo) -> dict:
    return dict(zip(TRACKED, _observed(job), strict=True))


def _paths(job: JobInfo) -> dict:
    return {"working_dir": job.working_dir[:500], "stdout_path": job.stdout[:500],
            "stderr_path": job.stderr[:500]}


def _recover_by_uuid(recovered: list[tuple[_Row, JobInfo]], result: TrackResult, now: datetime) -> None:
    """Portal jobs Slurm accepted but whose id never reached the database (the portal stopped)."""
    for row, job in recovered:
        # Conditional: if the submitting request records the id after all, it wins, once.
        claimed = Job.objects.filter(pk=row.pk, slurm_job_id__isnull=True).update(
            slurm_job_id=job.job_id, submit_time=job.submit_time, state_changed_at=now,
            accounted=False, **_tracked_fields(job), **_paths(job))
        if claimed:
            _insert_events(_timeline(row.pk, row, job))
            result.adopted += 1
            result.touch([row])


# ---------------------------------------------------------------- adoption of sbatch jobs

def _adopt(jobs: list[JobInfo], result: TrackResult, now: datetime) -> None:
    """Rows for jobs submitted outside the portal, so they show for their owner too."""
    if not jobs:
        return
    teams = {team.name: team for team in Team.objects.filter(name__in={job.account for job in jobs})}
    owners = _owners({job.user for job in jobs if job.account in teams})
    rows, tokens = [], set()
    for job in jobs:
        team, owner = teams.get(job.account), owners.get(job.user)
        if team is None or owner is None:
            result.unmanaged += 1
            continue
        rows.append(_adopted_row(job, owner, team, now, tokens))
    created = Job.objects.bulk_create(rows)
    _insert_events([_event(row.pk, row.state, "Found in Slurm: submitted outside the portal")
                    for row in created])
    result.adopted += len(created)
    result.touch(created)


def _owners(usernames: set[str]) -> dict:
    """Portal users named like the Slurm users, created for login accounts that have none yet."""
    user_model = get_user_model()
    found = {user.username: user for user in user_model.objects.filter(username__in=usernames)}
    for name in sorted(usernames - found.keys()):
        if gateway.is_login_user(name):
            # They sign in through SSO: a usable password would be a second way in.
            found[name], _ = user_model.objects.get_or_create(
                username=name, defaults={"password": make_password(None)})
    return found


def _adopted_row(job: JobInfo, owner, team: Team, now: datetime, tokens: set[str]) -> Job:
    # Keep a foreign portal UUID (another portal's job, or one whose row was deleted) so the
    # next sweep matches the row by it; two jobs carrying the same one get a fresh UUID.
    token = _token(job.comment)
    row_uuid = uuid.UUID(token) if token and token not in tokens else uuid.uuid4()
    tokens.add(str(row_uuid))
    return Job(
        uuid=row_uuid, slurm_job_id=job.job_id, owner=owner, team=team, adopted=True,
        name=(job.name or f"job {job.job_id}")[:200], partition=job.partition[:64],
        nodes=max(job.num_nodes, 1), gpus_per_node=gpu_count(job.gres_per_node),
        gpu_type=gpu_type(job.gres_per_node)[:32], cpus_per_task=max(job.cpus_per_task, 1),
        mem_mb=job.mem_mb, time_limit_min=job.time_limit_min or 0, requeue=job.requeue,
        submit_time=job.submit_time, state_changed_at=now, **_tracked_fields(job), **_paths(job),
    )


# ---------------------------------------------------------------- the submission outbox

def _settle_outbox(queued_tokens: set[str], result: TrackResult, now: datetime) -> list[_Row]:
    """Outbox rows past their grace whose job no full sweep found (the portal stopped before
    Slurm answered, or Slurm never got them). Slurm is asked once more by comment (sacct keeps
    jobs slurmctld already purged): rows it knows are recovered and returned, for accounting to
    complete; the rest are marked as never queued. Slurm is asked outside any transaction."""
    stale = {f"{COMMENT_PREFIX}{row.uuid}": row for row in _stale_outbox(now)
             if str(row.uuid) not in queued_tokens}
    if not stale:
        return []
    try:
        found = gateway.find_jobs_by_comment(
            stale, submitted_after=min(row.created_at for row in stale.values()) - CLOCK_SLACK)
    except SlurmUnavailable as exc:
        log.warning("cannot check the outbox against Slurm; next full sweep: %s", exc.message)
        return []
    with transaction.atomic():
        # Again, locked: a retry may have claimed or sent a row meanwhile (services._claim_send).
        locked = set(_stale_outbox(now).filter(pk__in=[row.pk for row in stale.values()])
                     .select_for_update(skip_locked=True).values_list("pk", flat=True))
        ran = {stale[c].pk: job_id for c, job_id in found.items() if stale[c].pk in locked}
        _mark_never_queued([row for row in stale.values() if row.pk in locked and row.pk not in ran],
                           result, now)
        for pk, job_id in ran.items():
            Job.objects.filter(pk=pk).update(slurm_job_id=job_id, state="PENDING", state_changed_at=now,
                                             sending_until=None)
    result.adopted += len(ran)
    recovered = _rows(Job.objects.filter(pk__in=ran))
    result.touch(recovered)
    return recovered


def _stale_outbox(now: datetime) -> QuerySet:
    """Unconfirmed rows past their grace that no request is sending (or may still be)."""
    return Job.objects.filter(slurm_job_id__isnull=True, state="", created_at__lt=now - OUTBOX_GRACE).filter(
        Q(sending_until__isnull=True) | Q(sending_until__lt=now)).only("pk", "uuid", "owner_id", "team_id",
                                                                      "created_at")


def _mark_never_queued(rows: list[Job], result: TrackResult, now: datetime) -> None:
    if not rows:
        return
    Job.objects.filter(pk__in=[row.pk for row in rows]).update(
        state=SUBMIT_FAILED, reason=SUBMIT_FAILED_REASON, state_changed_at=now)
    _insert_events([_event(row.pk, SUBMIT_FAILED, SUBMIT_FAILED_REASON) for row in rows])
    result.submit_failed += len(rows)
    result.touch(rows)


# ---------------------------------------------------------------- accounting from sacct

# A job cancelled while waiting after a requeue keeps where and how long it last ran: sacct's
# record carries the last attempt that ran, and the sweep has already blanked the nodes.
_ACCOUNT_SQL = f"""
UPDATE {_TABLE} AS j SET state = v.state, exit_code = v.exit_code, elapsed_s = v.elapsed_s,
    cpu_time_s = v.cpu_time_s, total_cpu_s = v.total_cpu_s, alloc_cpus = v.alloc_cpus,
    req_mem_mb = v.req_mem_mb, max_rss_kb = v.max_rss_kb,
    nodes_list = COALESCE(NULLIF(j.nodes_list, ''), v.nodes_list, ''),
    start_time = COALESCE(j.start_time, v.start_time), end_time = COALESCE(j.end_time, v.end_time),
    state_changed_at = COALESCE(v.moved_at, j.state_changed_at), accounted = true, pending_action = '',
    pending_action_at = NULL, updated_at = %s
FROM json_to_recordset(%s::json) AS v(id bigint, state text, exit_code integer, elapsed_s integer,
    cpu_time_s bigint, total_cpu_s double precision, alloc_cpus integer, req_mem_mb bigint,
    max_rss_kb bigint, nodes_list text, start_time timestamptz, end_time timestamptz, moved_at timestamptz)
WHERE j.id = v.id AND NOT j.accounted"""  # noqa: S608 - our own table name; every value is a parameter


def _complete_from_accounting(result: TrackResult, vanished: list[_Row], *, ended_before: datetime,
                              thorough: bool) -> None:
    """Fill the sacct fields of jobs that ended on an earlier cycle, and of jobs Slurm forgot."""
    window = ACCOUNTING_WINDOW if thorough else ACCOUNTING_RECENT
    rows = _awaiting_accounting(ended_before, window) + vanished
    if not rows:
        return
    records = _accounting({row.slurm_job_id for row in rows}, result)
    now = timezone.now()
    params, events = [], []
    for row in rows:
        state = _final_state(row, records.get(row.slurm_job_id), now)
        if state is None:
            continue  # sacct lags slurmctld: try again next cycle
        record, moved = records[row.slurm_job_id], state != row.state
        params.append(_accounting_params(row, record, state, now if moved else None))
        if moved:
            events.append(_event(row.pk, state, _accounting_detail(row, state, record)))
        result.finished += row.state in ACTIVE_STATES
    with transaction.atomic():
        _execute_json(_ACCOUNT_SQL, now, params)
        _insert_events(events)
    result.accounted += len(params)
    result.touch(rows)


def _awaiting_accounting(ended_before: datetime, window: timedelta) -> list[_Row]:
    # Jobs that ended this cycle wait for the next: sacct rarely has them yet.
    return _rows(Job.objects.filter(
        accounted=False, state__in=FINISHED_STATES, slurm_job_id__isnull=False,
        state_changed_at__lt=ended_before, state_changed_at__gte=ended_before - window))


def _accounting(job_ids: set[int], result: TrackResult) -> dict[int, AccountingRecord]:
    ids, records = sorted(job_ids), {}
    for start in range(0, len(ids), SACCT_BATCH):
        result.query("sacct")
        records.update({rec.job_id: rec for rec in gateway.accounting(ids[start:start + SACCT_BATCH])})
    return records


def _final_state(row: _Row, record: AccountingRecord | None, now: datetime) -> str | None:
    """The state to record with sacct's figures, or None to ask sacct again next cycle."""
    if record is None or not _same_run(row, record):
        return None
    waited = row.state_changed_at is None or row.state_changed_at < now - ACCOUNTING_PATIENCE
    # slurmdbd can list a job as finished before it holds its request (ReqMem empty, seen in
    # CI): taken then, the row would be accounted for good without its memory figures. So
    # wait for it, up to ACCOUNTING_PATIENCE after the row's last change (a cluster whose
    # jobs really have none is accounted that much later).
    if record.state in FINISHED_STATES and (record.req_mem_mb or waited):
        return record.state
    settled = row.state in FINISHED_STATES and row.state_changed_at is not None
    return row.state if settled and waited else None


def _same_run(row: _Row, record: AccountingRecord) -> bool:
    """sacct keeps jobs of a rebuilt cluster under the same ids: skip records from before the row."""
    return record.end_time is None or row.submit_time is None or record.end_time >= row.submit_time - SAME_JOB_SLACK


def _ran(row: _Row, record: AccountingRecord) -> bool:
    return bool(row.nodes_list) or record.elapsed_s > 0


def _accounting_exit_code(row: _Row, record: AccountingRecord) -> int | None:
    """sacct's code:signal as the tracker shows it: a signal as 128+N, nothing for a job that never ran."""
    if not _ran(row, record):
        return None
    return 128 + record.signal if record.signal else record.exit_code


def _accounting_params(row: _Row, record: AccountingRecord, state: str, moved_at: datetime | None) -> dict:
    ran = _ran(row, record)
    return {"id": row.pk, "state": state, "exit_code": _accounting_exit_code(row, record),
            "elapsed_s": record.elapsed_s, "cpu_time_s": record.cpu_time_s, "total_cpu_s": record.total_cpu_s,
            "alloc_cpus": record.alloc_cpus or None, "req_mem_mb": record.req_mem_mb,
            "max_rss_kb": record.max_rss_kb, "nodes_list": record.nodes[:500] if ran else None,
            "start_time": record.start_time if ran else None, "end_time": record.end_time,
            "moved_at": moved_at}


def _accounting_detail(row: _Row, state: str, record: AccountingRecord) -> str:
    words = explain.ending(state, _accounting_exit_code(row, record))
    return f"{words} (from accounting)" if words else "from accounting"


# ---------------------------------------------------------------- memo and lock in Redis

def _redis() -> redis.Redis:
    return cache_client()  # bounded: a stalled Redis fails the cycle, never hangs the worker


def _key(name: str) -> str:
    # One tracker per database: test and benchmark databases are tracked apart from the portal's.
    return f"portal:tracking:{connection.settings_dict['NAME']}:{name}"


def _load_memo() -> _Memo:
    raw = _redis().get(_key("memo"))
    try:
        return _Memo(**json.loads(raw)) if raw else _Memo()
    except (TypeError, ValueError):
        return _Memo()  # unreadable: start over with a full sweep


def _save_memo(memo: _Memo) -> None:
    _redis().set(_key("memo"), json.dumps(asdict(memo)), ex=24 * 3600)
