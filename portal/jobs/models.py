"""A Slurm job as the portal knows it. Slurm is the source of truth; this is its mirror."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Job(models.Model):
    # The portal's own id travels in the job's Slurm comment, so a job Slurm accepted but
    # the portal never recorded (crash in between) can be adopted by the tracker.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Not unique: a rebuilt cluster starts its job ids again; the tracker matches on
    # (slurm_job_id, submit_time) or the portal UUID in the comment.
    slurm_job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs")
    team = models.ForeignKey("teams.Team", on_delete=models.PROTECT, related_name="jobs")
    name = models.CharField(max_length=200)
    partition = models.CharField(max_length=64, blank=True)
    script = models.TextField(blank=True)

    # Slurm's state names (PENDING, RUNNING, COMPLETED, ...); "" before Slurm has it.
    state = models.CharField(max_length=32, blank=True, db_index=True)
    reason = models.CharField(max_length=200, blank=True)
    submit_time = models.DateTimeField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)

    nodes = models.PositiveIntegerField(default=1)
    gpus_per_node = models.PositiveIntegerField(default=0)
    gpu_type = models.CharField(max_length=32, blank=True)
    cpus_per_task = models.PositiveIntegerField(default=1)
    mem_mb = models.PositiveIntegerField(default=0)
    time_limit_min = models.PositiveIntegerField(default=60)
    requeue = models.BooleanField(default=True)
    checkpoint_dir = models.CharField(max_length=500, blank=True)

    nodes_list = models.CharField(max_length=500, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    restart_count = models.PositiveIntegerField(default=0)
    working_dir = models.CharField(max_length=500, blank=True)
    stdout_path = models.CharField(max_length=500, blank=True)
    stderr_path = models.CharField(max_length=500, blank=True)

    # Filled from sacct once the job has ended (its last run; see AccountingRecord).
    elapsed_s = models.PositiveIntegerField(null=True, blank=True)
    cpu_time_s = models.PositiveBigIntegerField(null=True, blank=True)  # allocated: elapsed x CPUs
    total_cpu_s = models.FloatField(null=True, blank=True)  # used: user + system time
    alloc_cpus = models.PositiveIntegerField(null=True, blank=True)
    req_mem_mb = models.PositiveBigIntegerField(null=True, blank=True)  # the whole job's request
    max_rss_kb = models.PositiveBigIntegerField(null=True, blank=True)
    accounted = models.BooleanField(default=False)

    # A retried request with the same key returns this job instead of making another.
    # NULL (not "") for "no key", so the partial unique constraint ignores keyless jobs.
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    # True for jobs submitted outside the portal (plain sbatch) that the tracker adopted.
    adopted = models.BooleanField(default=False)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    # While a request is sending this row to Slurm (or may still be, after a timeout), no
    # same-key retry may send it again; a crashed sender's claim simply runs out.
    sending_until = models.DateTimeField(null=True, blank=True)
    # A control (cancel, hold, release, requeue) the portal asked for and the tracker has not
    # yet seen take effect: the job page says so instead of leaving the user guessing.
    pending_action = models.CharField(max_length=16, blank=True, db_default="")  # bulk loaders may omit it
    pending_action_at = models.DateTimeField(null=True, blank=True)

    # How the latest bad ending is classified (portal/recovery): "infrastructure" failures are
    # requeued automatically, "application" ones are not. db_default: bulk loaders need not
    # know these columns.
    failure_class = models.CharField(max_length=16, blank=True, default="", db_default="")
    failure_cause = models.CharField(max_length=16, blank=True, default="", db_default="")
    # Requeues the worker made on its own, in the job's whole life (the crash-loop cap counts those
    # in a row without progress: portal/recovery/services.py requeues_in_a_row).
    auto_requeues = models.PositiveIntegerField(default=0, db_default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["owner", "-id"], name="job_owner_recent"),
            models.Index(fields=["team", "-id"], name="job_team_recent"),
            models.Index(fields=["state", "-id"], name="job_state_recent"),
            # The job list filters by state and sorts by name within what a person may see;
            # with a million rows these keep every such page a short index walk.
            models.Index(fields=["owner", "state", "-id"], name="job_owner_state_recent"),
            models.Index(fields=["team", "state", "-id"], name="job_team_state_recent"),
            models.Index(fields=["owner", "name", "id"], name="job_owner_by_name"),
            models.Index(fields=["team", "name", "id"], name="job_team_by_name"),
            models.Index(fields=["name", "id"], name="job_by_name"),
            # The tracker asks every second which ended jobs still lack sacct's figures; only
            # unaccounted rows (active ones and the recently ended) are in this index.
            models.Index(fields=["state_changed_at"], name="job_unaccounted",
                         condition=models.Q(accounted=False)),
            # The recovery cycle (portal/recovery/cycle.py) reads every second which jobs changed
            # since its cursor, ended and accounted ones included.
            models.Index(fields=["state_changed_at"], name="job_state_changed"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], name="one_job_per_idempotency_key",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slurm_job_id or 'unsubmitted'})"


class JobEvent(models.Model):
    """The job's timeline (state changes seen by the tracker) and its audit trail (actions)."""

    class Kind(models.TextChoices):
        STATE = "state", "State change"
        ACTION = "action", "Action"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # For actions: submit, cancel, hold, release, requeue. For state changes: the new state.
    name = models.CharField(max_length=32)
    ok = models.BooleanField(default=True)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["job", "at"], name="jobevent_job_at")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.kind} {self.name}"


class JobTemplate(models.Model):
    """A team's saved job script with default resources. Leads manage them."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="job_templates")
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    script = models.TextField()
    partition = models.CharField(max_length=64, blank=True)
    nodes = models.PositiveIntegerField(default=1)
    gpus_per_node = models.PositiveIntegerField(default=1)
    gpu_type = models.CharField(max_length=32, blank=True)
    cpus_per_task = models.PositiveIntegerField(default=8)
    mem_mb = models.PositiveIntegerField(default=32768)
    time_limit_min = models.PositiveIntegerField(default=60)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="template_name_per_team")]

    def __str__(self) -> str:
        return f"{self.team}/{self.name}"
