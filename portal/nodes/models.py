"""Compute nodes as last read from Slurm."""

from __future__ import annotations

from django.db import models


class Node(models.Model):
    name = models.CharField(max_length=64, unique=True)
    # Slurm's base state (IDLE, MIXED, ALLOCATED, DOWN, ...) and its flags (DRAIN, ...).
    state = models.CharField(max_length=32, blank=True)
    flags = models.JSONField(default=list, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    gres = models.CharField(max_length=200, blank=True)
    gpus = models.PositiveIntegerField(default=0)
    cpus = models.PositiveIntegerField(default=0)
    alloc_cpus = models.PositiveIntegerField(default=0)
    real_memory_mb = models.PositiveBigIntegerField(default=0)
    partitions = models.JSONField(default=list, blank=True)
    # When Slurm last listed this node; a node missing from Slurm keeps its old value.
    last_seen = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def display_state(self) -> str:
        return "+".join([self.state, *self.flags]) if self.flags else self.state
