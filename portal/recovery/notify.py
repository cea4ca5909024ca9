"""Emails to a job's owner when the portal requeued it, held it after a crash loop, or gave up.

One email per attempt and kind. The Notification row is the claim: it is written in the same
transaction that sends, and a second task for the same (attempt, kind) waits on that row's lock
and then finds it sent. A worker killed after the mail server accepted but before the commit
sends again on retry: at least once, never silently lost.

A skipped email (switched off, no address) is recorded with its reason and never retried; a
failed send is recorded with the error and raised as NotificationNotSent, which the task
retries with backoff a bounded number of times.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.urls import reverse

from portal.recovery.models import Attempt, Cause, FailureClass, Notification, NotificationSettings

log = logging.getLogger(__name__)

SEND_FAILED = "send failed: "  # the prefix of a retryable error; other errors are final reasons
SWITCHED_OFF = "switched off by the user"
NO_ADDRESS = "the user has no email address"
KIND_SETTING = {Notification.Kind.REQUEUED: "on_requeue", Notification.Kind.HELD: "on_hold",
                Notification.Kind.FAILED: "on_failure"}


class NotificationNotSent(Exception):
    """The mail server refused or did not answer; the task retries."""


@dataclass(frozen=True)
class Email:
    subject: str
    body: str


def wants(user, kind: str) -> bool:
    """The user's choice for this kind of email; no settings row means every email is on."""
    choice = NotificationSettings.objects.filter(user=user).values_list(KIND_SETTING[kind], flat=True).first()
    return True if choice is None else bool(choice)


def notify_job(attempt_id: int, kind: str) -> bool:
    """Send the email of `kind` about the attempt, once. True when an email went out now."""
    if kind not in KIND_SETTING:
        raise ValueError(f"unknown notification kind {kind!r}")
    error = ""
    with transaction.atomic():
        attempt = Attempt.objects.select_related("job__owner", "job__team").filter(pk=attempt_id).first()
        if attempt is None:
            return False  # the job was deleted since: nobody left to tell
        note, _ = Notification.objects.select_for_update().get_or_create(attempt=attempt, kind=kind)
        if note.sent or (note.error and not note.error.startswith(SEND_FAILED)):
            return False  # done before (sent, or skipped for a reason that still holds)
        owner = attempt.job.owner
        if not wants(owner, kind):
            return _record(note, sent=False, error=SWITCHED_OFF)
        if not owner.email:
            return _record(note, sent=False, error=NO_ADDRESS)
        try:
            _send(compose(attempt, kind), owner.email)
        except (smtplib.SMTPException, OSError) as exc:
            # Recorded and committed below; raised after the commit so the retry sees it.
            error = f"{SEND_FAILED}{type(exc).__name__}: {exc}"[:300]
            _record(note, sent=False, error=error)
        else:
            return _record(note, sent=True, error="")
    log.warning("email about %s (%s) to %s not sent: %s", attempt, kind, owner.username, error)
    raise NotificationNotSent(error)


def _record(note: Notification, *, sent: bool, error: str) -> bool:
    note.sent, note.error = sent, error
    note.save(update_fields=["sent", "error"])
    return sent


def _send(email: Email, address: str) -> None:
    EmailMessage(subject=email.subject, body=email.body, from_email=settings.DEFAULT_FROM_EMAIL,
                 to=[address]).send(fail_silently=False)


# ---------------------------------------------------------------- the words

def _url(name: str, *args: object) -> str:
    return settings.PORTAL_BASE_URL + reverse(name, args=args)


def _hours(gpu_s: float | None) -> str:
    return "not known" if gpu_s is None else f"{gpu_s / 3600:.2f} GPU-hours"


def _what_happened(attempt: Attempt) -> list[str]:
    cause = Cause(attempt.cause).label if attempt.cause in Cause.values else "It ended with an error"
    lines = [f"What happened: {cause}."]
    if attempt.failed_node:
        lines.append(f"Node: {attempt.failed_node}")
    if attempt.detail:
        lines.append(f"Details: {attempt.detail}")
    if attempt.failure_class == FailureClass.APPLICATION:
        lines += _evidence_lines(attempt)
    lines.append(f"Run: number {attempt.number + 1}, on {attempt.nodes_list or 'no node yet'}")
    lines.append(f"Started from checkpoint: {attempt.resumed_from or 'none (from the start)'}")
    lines.append(f"Work lost: {_hours(attempt.lost_gpu_s)}")
    return lines


def _evidence_lines(attempt: Attempt) -> list[str]:
    lines = []
    if attempt.exit_code is not None:
        lines.append(f"Exit code: {attempt.exit_code}")
    if attempt.signal:
        lines.append(f"Signal: {attempt.signal}")
    tail = (attempt.evidence or {}).get("output_tail") or []
    if tail:
        lines += ["Last lines of its output:", *(f"    {line}" for line in tail[-10:])]
    return lines


def _what_next(attempt: Attempt, kind: str) -> str:
    checkpoint = attempt.last_checkpoint or attempt.resumed_from
    if kind == Notification.Kind.REQUEUED:
        start = (f"from its latest checkpoint, {checkpoint}" if checkpoint
                 else "from the start (no checkpoint was found)")
        return (f"What happens next: the portal put the job back in the queue. Slurm will start it again on "
                f"another node, {start}. It keeps its Slurm job id. You need to do nothing.")
    if kind == Notification.Kind.HELD:
        return ("What happens next: nothing, until you act. The job failed too often in a row, so the portal "
                "held it instead of restarting it again. Look at the runs on the job page; when the cause is "
                "fixed, press Release there and it starts again from its latest checkpoint.")
    return ("What happens next: the portal does not restart a job for a failure of its own. Fix the cause "
            "(the evidence is on the job page) and submit it again, or clone it from the job page.")


SUBJECTS = {Notification.Kind.REQUEUED: "requeued after a node failure",
            Notification.Kind.HELD: "held after repeated failures",
            Notification.Kind.FAILED: "failed"}


def compose(attempt: Attempt, kind: str) -> Email:
    """The plain-text email: which job, what happened, what happens next, how to stop these."""
    job = attempt.job
    slurm = f"Slurm job {job.slurm_job_id}" if job.slurm_job_id else "not yet in Slurm"
    subject = f"[Cluster portal] Job {job.name} ({slurm}) {SUBJECTS[kind]}"
    body = "\n".join([
        f"Hello {job.owner.get_full_name() or job.owner.username},", "",
        f"your job \"{job.name}\" ({slurm}, team {job.team.name}) was {SUBJECTS[kind]}.", "",
        *_what_happened(attempt), "",
        _what_next(attempt, kind), "",
        f"The job's page: {_url('jobs:detail', job.pk)}", "",
        "You get these emails because they are switched on for your account. To switch them off,",
        f"untick them here: {_url('recovery:notifications')}", "",
    ])
    return Email(subject=" ".join(subject.split())[:250], body=body)  # one line: no header injection
