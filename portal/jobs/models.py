"""A Slurm job as the portal knows it. Slurm is the source of truth; this is its mirror."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Job(models.Model):
    # The portal's own id travels in the job's Slurm comment, so a job Slurm accepted but
    # the portal never recorded (crash in between) can be adopted by the tracker.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slurm_job_id = models.BigIntegerField(null=True, blank=True, unique=True)
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

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["owner", "-id"], name="job_owner_recent"),
            models.Index(fields=["team", "-id"], name="job_team_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slurm_job_id or 'unsubmitted'})"
