"""Submitting and controlling jobs. Views and API endpoints call these; they hold the logic.

Exactly-once submission: the Job row (with its UUID) is committed *before* Slurm is asked,
and the UUID travels in the job's Slurm comment. If the portal dies after Slurm accepted
the job but before the row got its Slurm id, the tracker finds the comment and adopts it.
"""

from __future__ import annotations

import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.jobs.access import can_control, member_teams
from portal.jobs.models import Job, JobEvent
from portal.slurm import gateway
from portal.slurm.errors import SlurmError, SlurmRejected, SlurmUnavailable, TokenRefused
from portal.slurm.types import JobSpec

log = logging.getLogger(__name__)

COMMENT_PREFIX = "portal:"
ACTIONS = ("cancel", "hold", "release", "requeue")


class JobActionRefused(Exception):
    """The user may see the job but not do this to it (or the job's state forbids it)."""


@dataclass(frozen=True)
class SubmitOutcome:
    job: Job
    created: bool


def portal_comment(job: Job) -> str:
    return f"{COMMENT_PREFIX}{job.uuid}"


def default_checkpoint_dir(team: str, username: str, job_uuid) -> str:
    return str(Path(settings.CHECKPOINT_ROOT) / team / username / str(job_uuid))


def _prepare_checkpoint_dir(path: str, username: str) -> None:
    """Create the job's checkpoint directory owned by the user, where the portal may.

    A portal running unprivileged cannot chown; then the site provisions the root and the
    job creates its own directory (examples/ show `mkdir -p "$CHECKPOINT_DIR"`).
    """
    if os.geteuid() != 0 or not path.startswith(settings.CHECKPOINT_ROOT.rstrip("/") + "/"):
        return
    entry = pwd.getpwnam(username)
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    for directory in (target.parent, target):  # <root>/<team>/<user> and the job's own
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    # <root>/<team> stays root-owned but must be traversable.
    target.parent.parent.chmod(0o755)


def _create_row(user, data: dict, idempotency_key: str | None) -> SubmitOutcome:
    team = member_teams(user).get(name=data["team"])
    try:
        with transaction.atomic():
            job = Job.objects.create(
                owner=user, team=team, name=data["name"], partition=data["partition"],
                script=data["script"], nodes=data["nodes"], gpus_per_node=data["gpus_per_node"],
                gpu_type=data.get("gpu_type") or "", cpus_per_task=data["cpus_per_task"],
                mem_mb=data["mem_mb"], time_limit_min=data["time_limit_min"],
                requeue=data["requeue"], idempotency_key=idempotency_key,
            )
            job.checkpoint_dir = data.get("checkpoint_dir") or default_checkpoint_dir(
                team.name, user.username, job.uuid)
            job.save(update_fields=["checkpoint_dir"])
    except IntegrityError:
        # The same idempotency key raced us: the other request's job is the answer.
        return SubmitOutcome(Job.objects.get(owner=user, idempotency_key=idempotency_key), False)
    return SubmitOutcome(job, True)


def _spec_for(job: Job, home: str) -> JobSpec:
    return JobSpec(
        name=job.name, account=job.team.name, script=job.script, working_dir=home,
        partition=job.partition, nodes=job.nodes, gpus_per_node=job.gpus_per_node,
        gpu_type=job.gpu_type, cpus_per_task=job.cpus_per_task, mem_mb=job.mem_mb,
        time_limit_min=job.time_limit_min, requeue=job.requeue,
        stdout=f"{home}/slurm-%j.out", stderr=f"{home}/slurm-%j.err", comment=portal_comment(job),
        environment={"CHECKPOINT_DIR": job.checkpoint_dir, "PORTAL_JOB_UUID": str(job.uuid),
                     "HOME": home, "USER": job.owner.username},
    )


def submit_job(*, user, data: dict, idempotency_key: str | None = None) -> SubmitOutcome:
    """Submit a validated job request as `user`. A repeated idempotency key returns the first job."""
    if idempotency_key:
        existing = Job.objects.filter(owner=user, idempotency_key=idempotency_key).first()
        if existing:
            return SubmitOutcome(existing, False)
    outcome = _create_row(user, data, idempotency_key)
    if not outcome.created:
        return outcome
    job = outcome.job
    try:
        home = pwd.getpwnam(user.username).pw_dir
    except KeyError:
        job.delete()
        raise TokenRefused(f"{user.username!r} has no account on the cluster") from None
    _prepare_checkpoint_dir(job.checkpoint_dir, user.username)
    try:
        slurm_id = gateway.submit_job(user.username, _spec_for(job, home))
    except (SlurmRejected, TokenRefused):
        job.delete()  # Slurm said no: nothing was queued, so nothing to track
        raise
    except SlurmUnavailable:
        # Slurm may or may not have queued it; the tracker adopts it by UUID if it did.
        _record(job, JobEvent.Kind.ACTION, "submit", user, ok=False,
                detail="Slurm did not confirm the submission; the portal will find the job if it was queued.")
        raise
    _mark_submitted(job, slurm_id, home, user)
    return outcome


def _mark_submitted(job: Job, slurm_id: int, home: str, user) -> None:
    now = timezone.now()
    Job.objects.filter(pk=job.pk, slurm_job_id__isnull=True).update(
        slurm_job_id=slurm_id, state="PENDING", submit_time=now, state_changed_at=now,
        working_dir=home, stdout_path=f"{home}/slurm-{slurm_id}.out",
        stderr_path=f"{home}/slurm-{slurm_id}.err")
    job.refresh_from_db()
    _record(job, JobEvent.Kind.ACTION, "submit", user, detail=f"Slurm job {slurm_id}")


def _record(job: Job, kind: str, name: str, actor=None, *, ok: bool = True, detail: str = "") -> JobEvent:
    return JobEvent.objects.create(job=job, kind=kind, name=name, actor=actor, ok=ok, detail=detail[:500])


def control_job(*, user, job: Job, action: str) -> Job:
    """Cancel, hold, release or requeue `job` as `user`, in Slurm, and audit the outcome."""
    if action not in ACTIONS:
        raise JobActionRefused(f"unknown action {action!r}")
    if not can_control(user, job):
        raise JobActionRefused("Only the job's owner, its team's lead or an admin can do that.")
    if job.slurm_job_id is None:
        raise JobActionRefused("Slurm has not confirmed this job yet.")
    call = {"cancel": gateway.cancel_job, "hold": gateway.hold_job,
            "release": gateway.release_job, "requeue": gateway.requeue_job}[action]
    try:
        call(user.username, job.slurm_job_id)
    except SlurmError as exc:
        _record(job, JobEvent.Kind.ACTION, action, user, ok=False, detail=exc.message)
        raise
    _record(job, JobEvent.Kind.ACTION, action, user)
    return job


def clone_initial(job: Job) -> dict:
    """Form values for 'clone and edit'."""
    return {"name": f"{job.name} (copy)"[:100], "team": job.team.name, "partition": job.partition,
            "nodes": job.nodes, "gpus_per_node": job.gpus_per_node, "gpu_type": job.gpu_type,
            "cpus_per_task": job.cpus_per_task, "mem_mb": job.mem_mb,
            "time_limit_min": job.time_limit_min, "requeue": job.requeue, "script": job.script}
