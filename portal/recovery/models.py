"""Keeping jobs alive through node failures: every run of a job, why it ended, what was done.

A job's runs are its attempts (attempt 0 is the first run; attempt N started after the Nth
requeue, matching Slurm's restart count). When a run ends badly the worker classifies the
failure: infrastructure failures (the node's fault) are requeued automatically, application
failures (the job's own fault) are shown with their evidence and left alone.

Requeues are written as an outbox row (Recovery) before Slurm is asked, so a worker killed
half way loses nothing: the next cycle finds the open row and finishes it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class FailureClass(models.TextChoices):
    NONE = "", "None"
    INFRASTRUCTURE = "infrastructure", "Node failure"
    APPLICATION = "application", "Job's own failure"


class Cause(models.TextChoices):
    """Why a run ended badly. The first four are infrastructure, the rest application."""

    NODE_FAIL = "node_fail", "Node failed (Slurm NODE_FAIL)"
    FATAL_FINDING = "fatal_finding", "Fatal hardware fault on a node it ran on"
    PROLOG_FAIL = "prolog_fail", "Node failed its start-up health check"
    HUNG_NODE = "hung_node", "Node stopped responding"
    EXIT_CODE = "exit_code", "The job's script failed"
    OUT_OF_MEMORY = "out_of_memory", "Ran out of memory"
    TIMEOUT = "timeout", "Reached its time limit"
    CANCELLED = "cancelled", "Cancelled by a person"


INFRASTRUCTURE_CAUSES = frozenset({Cause.NODE_FAIL, Cause.FATAL_FINDING, Cause.PROLOG_FAIL, Cause.HUNG_NODE})


class Attempt(models.Model):
    """One run of a job on its nodes, from start to its end or its requeue."""

    class Outcome(models.TextChoices):
        RUNNING = "", "Running"
        SUCCEEDED = "succeeded", "Finished"
        REQUEUED = "requeued", "Requeued by the portal"
        HELD = "held", "Held: too many automatic restarts"
        FAILED = "failed", "Failed, not restarted"

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()  # Slurm's restart count during this run
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    nodes_list = models.CharField(max_length=500, blank=True)
    gpus = models.PositiveIntegerField(default=0)  # GPUs of the whole allocation

    # The checkpoint this run started from (PORTAL_RESUME_FROM), and the newest complete one
    # when it ended: the lost work is the time since then, times the GPUs.
    resumed_from = models.CharField(max_length=500, blank=True)
    last_checkpoint = models.CharField(max_length=500, blank=True)
    last_checkpoint_at = models.DateTimeField(null=True, blank=True)
    lost_gpu_s = models.FloatField(null=True, blank=True)

    failure_class = models.CharField(max_length=16, choices=FailureClass.choices, blank=True)
    cause = models.CharField(max_length=16, choices=Cause.choices, blank=True)
    failed_node = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=500, blank=True)  # plain words for the job page
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.IntegerField(null=True, blank=True)
    # Evidence shown with an application failure: last output lines, node health at the time.
    evidence = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="one_attempt_per_run")]

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.number}"


class Recovery(models.Model):
    """Outbox: an automatic requeue the worker decided on. Written before Slurm is asked, done
    when Slurm shows the job pending again elsewhere; an open row is finished by the next cycle."""

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="recoveries")
    attempt = models.OneToOneField(Attempt, on_delete=models.CASCADE, related_name="recovery")
    cause = models.CharField(max_length=16, choices=Cause.choices)
    failed_node = models.CharField(max_length=64, blank=True)
    exclude_nodes = models.CharField(max_length=500, blank=True)  # Slurm hostlist
    not_before = models.DateTimeField(null=True, blank=True)      # crash-loop backoff
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_until = models.DateTimeField(null=True, blank=True)   # a worker is acting on it
    done_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="recovery_open",
                                condition=models.Q(done_at__isnull=True))]

    def __str__(self) -> str:
        return f"recovery of job {self.job_id} ({self.cause})"


class NotificationSettings(models.Model):
    """A user's choice of emails about their jobs; no row means every email is on."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="notification_settings")
    on_requeue = models.BooleanField(default=True)
    on_hold = models.BooleanField(default=True)
    on_failure = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"notifications for {self.user}"


class Notification(models.Model):
    """One email sent (or skipped) about one attempt: the unique key makes sending idempotent."""

    class Kind(models.TextChoices):
        REQUEUED = "requeued", "Requeued"
        HELD = "held", "Held"
        FAILED = "failed", "Failed"

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField(auto_now_add=True)
    sent = models.BooleanField(default=False)  # False: the user switched this kind off
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["attempt", "kind"], name="one_notification_per_kind")]

    def __str__(self) -> str:
        return f"{self.kind} about {self.attempt}"
