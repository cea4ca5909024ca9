"""Submitting and controlling jobs. Views and API endpoints call these; they hold the logic.

Exactly-once submission: the Job row (with its UUID) is committed *before* Slurm is asked,
and the UUID travels in the job's Slurm comment. If the portal dies after Slurm accepted
the job but before the row got its Slurm id, the tracker finds the comment and adopts it.
"""

from __future__ import annotations

import logging
import pwd
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from portal.jobs import checkpoints, list_cache, states
from portal.jobs.access import can_control, can_manage_templates, member_teams
from portal.jobs.checkpoints import CheckpointRefused
from portal.jobs.models import Job, JobEvent, JobTemplate
from portal.jobs.quota import GpuAsk, check_submit
from portal.slurm import gateway
from portal.slurm.errors import (
    SlurmError,
    SlurmNotFound,
    SlurmRejected,
    SlurmUnavailable,
    SlurmUnreached,
    TokenRefused,
)
from portal.slurm.types import FINISHED_STATES, JobSpec, PriorityFactors, QueuedJob
from portal.teams.models import Team

log = logging.getLogger(__name__)

COMMENT_PREFIX = "portal:"
ACTIONS = ("cancel", "hold", "release", "requeue")
# The tracker's mark for an outbox row Slurm never received; a same-key retry may still send it.
SUBMIT_FAILED = states.SUBMIT_FAILED
# A submission outlives its request when the answer times out: slurmrestd may still be waiting
# for slurmctld (MessageTimeout). The row's sending claim lasts this many gateway timeouts.
SEND_CLAIM_TIMEOUTS = 3
# How long a repeat waits for an earlier request that is still sending the same row.
REPEAT_WAIT_S = 3.0
# sacct is asked about jobs submitted from a little before the row was written (clock skew).
CLOCK_SLACK = timedelta(minutes=1)


class JobActionRefused(Exception):
    """The user may see the job but not do this to it (or the job's state forbids it)."""


class SubmissionUnconfirmed(SlurmUnavailable):
    """Slurm did not confirm a submission. The row stays (`job_id`, the portal's id): the tracker
    adopts the job if Slurm queued it, and a retry with the same Idempotency-Key settles it."""

    def __init__(self, message: str, job_id: int):
        super().__init__(message)
        self.job_id = job_id
        self.extra = {"id": job_id}   # portal/infra/errors.py puts it in the 503's body


@dataclass(frozen=True)
class SubmitOutcome:
    job: Job
    created: bool


def portal_comment(job: Job) -> str:
    return f"{COMMENT_PREFIX}{job.uuid}"


@dataclass(frozen=True)
class SubmitRequest:
    """A validated job request: what the submit form and the API hand to submit_job."""

    team: Team
    name: str
    script: str
    partition: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    gpu_type: str = ""
    cpus_per_task: int = 1
    mem_mb: int = 0
    time_limit_min: int = 60
    requeue: bool = True
    hold: bool = False
    checkpoint_dir: str = ""   # empty: <CHECKPOINT_ROOT>/<team>/<user>/<job uuid>


def _create_row(user, spec: SubmitRequest, idempotency_key: str | None) -> SubmitOutcome:
    """The outbox row, in one INSERT (its UUID is made here, so the default path needs no UPDATE)."""
    job = Job(owner=user, team=spec.team, name=spec.name, partition=spec.partition, script=spec.script,
              nodes=spec.nodes, gpus_per_node=spec.gpus_per_node, gpu_type=spec.gpu_type,
              cpus_per_task=spec.cpus_per_task, mem_mb=spec.mem_mb, time_limit_min=spec.time_limit_min,
              requeue=spec.requeue, idempotency_key=idempotency_key, sending_until=_send_claim())
    job.checkpoint_dir = spec.checkpoint_dir or checkpoints.default_path(spec.team.name, user.username, job.uuid)
    try:
        with transaction.atomic():
            job.save(force_insert=True)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # A repeat (or a racing twin) of an earlier request: the first job is the answer.
        return SubmitOutcome(Job.objects.select_related("owner", "team")
                             .get(owner=user, idempotency_key=idempotency_key), False)
    return SubmitOutcome(job, True)


def _send_claim() -> datetime:
    return timezone.now() + timedelta(seconds=SEND_CLAIM_TIMEOUTS * settings.SLURM["TIMEOUT_S"])


def _spec_for(job: Job, home: str, *, hold: bool = False) -> JobSpec:
    return JobSpec(
        name=job.name, account=job.team.name, script=job.script, working_dir=home,
        partition=job.partition, nodes=job.nodes, gpus_per_node=job.gpus_per_node,
        gpu_type=job.gpu_type, cpus_per_task=job.cpus_per_task, mem_mb=job.mem_mb,
        time_limit_min=job.time_limit_min, requeue=job.requeue,
        stdout=f"{home}/slurm-%j.out", stderr=f"{home}/slurm-%j.err", comment=portal_comment(job), hold=hold,
        environment={"CHECKPOINT_DIR": job.checkpoint_dir, "PORTAL_JOB_UUID": str(job.uuid),
                     "HOME": home, "USER": job.owner.username},
    )


def submit_job(*, user, spec: SubmitRequest, idempotency_key: str | None = None) -> SubmitOutcome:
    """Submit a validated job request as `user`. A repeated idempotency key returns the first job.

    Raises CheckpointRefused (nothing queued, no row kept) when the checkpoint directory may
    not be used or made, and QuotaExceeded (nothing written, nothing sent) when the job would
    break a hard limit of its team now."""
    if not _is_repeat(user, idempotency_key):
        # A repeat answers with the job already accepted, whatever the team holds now.
        check_submit(spec.team, GpuAsk(spec.nodes, spec.gpus_per_node, spec.gpu_type))
    outcome = _create_row(user, spec, idempotency_key)
    if not outcome.created:
        return _settle_repeat(outcome, user, hold=spec.hold)
    try:
        _send(outcome.job, user, hold=spec.hold)
    finally:
        # The row was written (and maybe updated or deleted again): lists showing it rebuild.
        list_cache.changed([(user.pk, outcome.job.team_id)])
    return outcome


def _is_repeat(user, idempotency_key: str | None) -> bool:
    return idempotency_key is not None and Job.objects.filter(owner=user, idempotency_key=idempotency_key).exists()


def _settle_repeat(outcome: SubmitOutcome, user, *, hold: bool) -> SubmitOutcome:
    """A retry of a submission Slurm never confirmed: adopt the job if Slurm has it, else send it again.

    Same row, same UUID, so the job can exist only once. The conditional claim lets one request
    at a time do this, and never while the first request may still be talking to Slurm.
    """
    job = outcome.job
    if job.slurm_job_id is not None or job.state not in ("", SUBMIT_FAILED):
        return outcome
    if not _claim_send(job):
        if _first_request_confirms(job):
            return outcome
        raise SubmissionUnconfirmed("An earlier request with this Idempotency-Key is still waiting for "
                                    "Slurm's answer; retry shortly.", job.pk)
    try:
        _find_or_send(job, user, hold=hold)
    finally:
        list_cache.changed([(user.pk, job.team_id)])
    return outcome


def _first_request_confirms(job: Job) -> bool:
    """Wait briefly for the request holding the claim (a double click's first half): Slurm
    usually answers it in well under a second, and then the repeat gets the job, not a 503."""
    deadline = time.monotonic() + REPEAT_WAIT_S
    while True:
        job.refresh_from_db()
        if job.slurm_job_id is not None:
            return True
        if job.sending_until is None or time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _claim_send(job: Job) -> bool:
    """Take the row's sending claim, if no one holds it and Slurm has not confirmed the job."""
    now = timezone.now()
    return bool(Job.objects.filter(pk=job.pk, slurm_job_id__isnull=True, state__in=("", SUBMIT_FAILED))
                .filter(Q(sending_until__isnull=True) | Q(sending_until__lt=now))
                .update(sending_until=_send_claim(), state="", reason="", state_changed_at=now))


def _find_or_send(job: Job, user, *, hold: bool) -> None:
    try:
        found = gateway.find_jobs_by_comment([portal_comment(job)], submitted_after=job.created_at - CLOCK_SLACK)
    except SlurmUnavailable as exc:
        _release_claim(job)  # nothing was sent
        raise SubmissionUnconfirmed(f"Slurm is not answering: {exc.message}", job.pk) from exc
    slurm_id = found.get(portal_comment(job))
    if slurm_id is None:
        _send(job, user, hold=hold)
    else:  # an earlier attempt reached Slurm after all
        _mark_submitted(job, slurm_id, _home(user), user)


def _release_claim(job: Job) -> None:
    Job.objects.filter(pk=job.pk, slurm_job_id__isnull=True).update(sending_until=None)


def _home(user) -> str:
    try:
        return pwd.getpwnam(user.username).pw_dir
    except KeyError:
        raise TokenRefused(f"{user.username!r} has no account on the cluster") from None


def _send(job: Job, user, *, hold: bool) -> None:
    """Hand the outbox row to Slurm as its owner and record the answer."""
    try:
        home = _home(user)
    except TokenRefused:
        job.delete()
        raise
    try:
        _prepare_checkpoint_dir(job, user)
    except CheckpointRefused:
        job.delete()
        raise
    try:
        slurm_id = gateway.submit_job(user.username, _spec_for(job, home, hold=hold))
    except (SlurmRejected, TokenRefused):
        job.delete()  # Slurm said no: nothing was queued, so nothing to track
        raise
    except SlurmUnavailable as exc:
        if isinstance(exc, SlurmUnreached):
            _release_claim(job)  # nothing left the portal: a retry may send at once
        # Slurm may or may not have queued it; the tracker adopts it by UUID if it did.
        _record(job, JobEvent.Kind.ACTION, "submit", user, ok=False,
                detail="Slurm did not confirm the submission; the portal will find the job if it was queued.")
        raise SubmissionUnconfirmed(f"Slurm did not confirm the submission: {exc.message}", job.pk) from exc
    _mark_submitted(job, slurm_id, home, user)


def _prepare_checkpoint_dir(job: Job, user) -> None:
    default = checkpoints.default_path(job.team.name, user.username, job.uuid)
    # The default path is in the job's own team; only a path the user chose needs the team list.
    teams = [job.team.name] if job.checkpoint_dir == default else member_teams(user).values_list("name", flat=True)
    checkpoints.prepare(job.checkpoint_dir, username=user.username, teams=teams)


def _mark_submitted(job: Job, slurm_id: int, home: str, user) -> None:
    now = timezone.now()
    fields = {"slurm_job_id": slurm_id, "state": "PENDING", "submit_time": now, "state_changed_at": now,
              "working_dir": home, "stdout_path": f"{home}/slurm-{slurm_id}.out",
              "stderr_path": f"{home}/slurm-{slurm_id}.err", "sending_until": None}
    with transaction.atomic():  # one commit for the row and its audit entry
        claimed = Job.objects.filter(pk=job.pk, slurm_job_id__isnull=True).update(**fields)
        _record(job, JobEvent.Kind.ACTION, "submit", user, detail=f"Slurm job {slurm_id}")
    if claimed:
        for name, value in fields.items():
            setattr(job, name, value)
    else:  # the tracker adopted it first (by its UUID): its row is the truth
        job.refresh_from_db()


def _record(job: Job, kind: str, name: str, actor=None, *, ok: bool = True, detail: str = "") -> JobEvent:
    return JobEvent.objects.create(job=job, kind=kind, name=name, actor=actor, ok=ok, detail=detail[:500])


def control_job(*, user, job: Job, action: str) -> Job:
    """Cancel, hold, release or requeue `job` as `user`, in Slurm, and audit the outcome.

    The request is marked on the row before Slurm is asked, so a lost answer (or a tracker
    that is down) leaves "cancel requested at ..." on the job page until the tracker sees
    Slurm carry it out. A refusal from Slurm takes the mark off again.
    """
    if action not in ACTIONS:
        raise JobActionRefused(f"unknown action {action!r}")
    if not can_control(user, job):
        raise JobActionRefused("Only the job's owner, its team's lead or an admin can do that.")
    if job.slurm_job_id is None:
        raise JobActionRefused("Slurm has not confirmed this job yet.")
    call = {"cancel": gateway.cancel_job, "hold": gateway.hold_job,
            "release": gateway.release_job, "requeue": gateway.requeue_job}[action]
    requested_at = _mark_pending(job, action)
    try:
        call(user.username, job.slurm_job_id)
    except SlurmError as exc:
        if not exc.retryable:  # Slurm answered no: nothing is on its way
            Job.objects.filter(pk=job.pk, pending_action_at=requested_at).update(pending_action="",
                                                                                 pending_action_at=None)
        _record(job, JobEvent.Kind.ACTION, action, user, ok=False, detail=exc.message)
        raise
    finally:
        list_cache.changed([(job.owner_id, job.team_id)])
    _record(job, JobEvent.Kind.ACTION, action, user)
    return job


def _mark_pending(job: Job, action: str) -> datetime:
    """Mark the control on the row, unless the job already ended (then nothing will confirm it)."""
    now = timezone.now()
    Job.objects.filter(pk=job.pk).exclude(state__in=FINISHED_STATES).update(pending_action=action,
                                                                         pending_action_at=now)
    return now


def clone_initial(job: Job) -> dict:
    """Form values for 'clone and edit'."""
    return {"name": f"{job.name} (copy)"[:100], "team": job.team.name, "partition": job.partition,
            "nodes": job.nodes, "gpus_per_node": job.gpus_per_node, "gpu_type": job.gpu_type,
            "cpus_per_task": job.cpus_per_task, "mem_mb": job.mem_mb,
            "time_limit_min": job.time_limit_min, "requeue": job.requeue, "script": job.script}


# ---------------------------------------------------------------- researcher web pages

def available_actions(job: Job) -> list[str]:
    """The controls that make sense in the job's current state, in display order."""
    if job.slurm_job_id is None:
        return []
    if job.state == "PENDING":
        return ["release", "cancel"] if job.reason in states.HELD_REASONS else ["hold", "cancel"]
    if job.state in states.ON_NODES:
        return ["requeue", "cancel"]
    if job.state in states.LEAVING:
        return ["cancel"]
    return []


# Waiting jobs with these reasons compete for the next free resources; the others (held,
# a start time, a dependency, their own team's limit) would not start now anyway.
COMPETING_REASONS = frozenset({"", "Priority", "Resources"})


@dataclass(frozen=True)
class QueueAhead:
    """Where a waiting job stands among the jobs competing in its partition."""

    position: int                  # 1: next in line
    waiting: int                   # competing waiting jobs in the partition, this one included
    own: tuple[int, ...]           # the owner's own Slurm job ids ahead of it
    team: int                      # other people's jobs of the same team ahead of it
    others: int                    # other teams' jobs ahead of it


def queue_ahead(job: Job, queue: list[QueuedJob]) -> QueueAhead | None:
    """The jobs ahead of `job` in `queue` (Slurm's order), None if it is not in it."""
    competing = [q for q in queue if q.reason in COMPETING_REASONS or q.job_id == job.slurm_job_id]
    index = next((i for i, q in enumerate(competing) if q.job_id == job.slurm_job_id), None)
    if index is None:
        return None
    ahead = competing[:index]
    own = tuple(q.job_id for q in ahead if q.user == job.owner.username)
    team = sum(1 for q in ahead if q.user != job.owner.username and q.account == job.team.name)
    return QueueAhead(position=index + 1, waiting=len(competing), own=own, team=team,
                      others=len(ahead) - len(own) - team)


@dataclass(frozen=True)
class QueueInsight:
    """Why a pending job waits: Slurm's priority factors, its start estimate, the jobs ahead."""

    factors: PriorityFactors | None
    estimated_start: datetime | None
    unavailable: bool = False
    ahead: QueueAhead | None = None


QUEUE_INSIGHT_SECONDS = 5


def queue_insight(job: Job) -> QueueInsight | None:
    """Live queue facts for a PENDING job (None for other jobs); never raises for Slurm trouble.

    Cached for a few seconds: the job page polls every 2 s, and sprio and squeue are CLI calls.
    """
    if job.state != "PENDING" or job.slurm_job_id is None:
        return None
    key = f"jobs:queue-insight:{job.slurm_job_id}"
    insight = cache.get(key)
    if insight is None:
        try:
            info = gateway.get_job(job.slurm_job_id)
            insight = QueueInsight(gateway.job_priority(job.slurm_job_id), info.estimated_start,
                                   ahead=queue_ahead(job, gateway.pending_queue(info.partition or job.partition)))
        except SlurmNotFound:
            insight = QueueInsight(None, None)
        except SlurmError:
            return QueueInsight(None, None, unavailable=True)
        cache.set(key, insight, QUEUE_INSIGHT_SECONDS)
    return insight


def save_template(*, user, template: JobTemplate) -> JobTemplate:
    """Create or update a team's job template. Only the team's lead or an admin may."""
    if not can_manage_templates(user, template.team):
        raise JobActionRefused("Only the team's lead or an admin can change its templates.")
    if template.pk is None:
        template.created_by = user
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError:
        raise JobActionRefused(f"The team already has a template named {template.name!r}.") from None
    return template


def delete_template(*, user, template: JobTemplate) -> None:
    if not can_manage_templates(user, template.team):
        raise JobActionRefused("Only the team's lead or an admin can delete its templates.")
    template.delete()
