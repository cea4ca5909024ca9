"""Compute nodes as last read from Slurm, and the health reports their sensors send."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.nodes.states import state_word


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
    # The newest health report (by the time the node sent it) and whether it was clean.
    last_health_at = models.DateTimeField(null=True, blank=True)
    last_health_ok = models.BooleanField(null=True, blank=True)
    # Since when Slurm has shown the node DOWN or NOT_RESPONDING (null: responding). Set and
    # cleared by the health policy's periodic check with conditional updates, so each outage
    # is recorded once (NodeAction kinds "down" and "up").
    unreachable_since = models.DateTimeField(null=True, blank=True)
    # Set (under the partition's row locks) when the health policy decides to drain the node and
    # cleared once Slurm has answered: the drain cap counts it, so two drains in one partition
    # never both pass the cap, and no row lock is held while scontrol runs.
    drain_claimed_at = models.DateTimeField(null=True, blank=True)
    # Set by services.drain_node / resume_node while they change the node in Slurm and record it:
    # sync_nodes then does not log the change as one made outside the portal.
    portal_writing_at = models.DateTimeField(null=True, blank=True)
    # The hung-node check (portal/nodes/hung.py): since when every probe of the node's slurmd
    # went unanswered (null: it answered last time, or was not probed), and the last probe.
    slurmd_silent_since = models.DateTimeField(null=True, blank=True)
    slurmd_probed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def display_state(self) -> str:
        return "+".join([self.state, *self.flags]) if self.flags else self.state

    @property
    def state_label(self) -> tuple[str, str]:
        """(plain words, badge colour), as every node page shows the state."""
        return state_word(self.state, self.flags)


class HealthReport(models.Model):
    """One signed report from a node's sensor (slurm_plugins): one prolog, epilog or health check run.

    Clean runs are stored too: "N consecutive clean checks" is how a drained node earns its
    way back. The nonce is unique, which is what makes a replayed report impossible to store.
    """

    class Source(models.TextChoices):
        PROLOG = "prolog"
        EPILOG = "epilog"
        HEALTHCHECK = "healthcheck"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="health_reports")
    source = models.CharField(max_length=16, choices=Source.choices)
    sent_at = models.DateTimeField()
    received_at = models.DateTimeField(db_index=True)
    nonce = models.CharField(max_length=64, unique=True)
    job_id = models.BigIntegerField(null=True, blank=True)
    # No fatal or warning finding (info-only findings, like an ignored XID, still count as clean).
    clean = models.BooleanField()
    # Sent while the portal was down and replayed from the node's spool, older than the window.
    late = models.BooleanField(default=False)

    class Meta:
        ordering = ["-sent_at"]
        indexes = [models.Index(fields=["node", "-sent_at"], name="health_node_sent")]

    def __str__(self) -> str:
        return f"{self.node.name} {self.source} {self.sent_at:%Y-%m-%d %H:%M:%S}"


class Finding(models.Model):
    """One problem a report carried, with the severity and action the sensor assigned."""

    class Severity(models.TextChoices):
        FATAL = "fatal"
        WARNING = "warning"
        INFO = "info"

    class Action(models.TextChoices):
        DRAIN = "drain"
        REBOOT = "reboot"
        RESTART_APP = "restart_app"
        NONE = "none"
        IGNORE = "ignore"

    report = models.ForeignKey(HealthReport, on_delete=models.CASCADE, related_name="findings")
    # Denormalised from the report: the policy counts findings per node over time (lemons).
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="health_findings")
    # The sensor's "check" ("xid", "ecc", "gpu-count", ...); `check` itself is taken by Model.check().
    check_name = models.CharField(max_length=64)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    action = models.CharField(max_length=16, choices=Action.choices)
    gpu = models.SmallIntegerField(null=True, blank=True)
    xid = models.IntegerField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at", "id"]
        indexes = [
            models.Index(fields=["node", "check_name", "-sent_at"], name="finding_node_check_sent"),
            # The policy's bulk pass counts every node's warnings in the lemon window at once.
            models.Index(fields=["severity", "sent_at"], name="finding_severity_sent"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.check_name}: {self.detail}"


class HealthSummary(models.Model):
    """One node's health reports of one UTC hour, kept for long after the raw reports are pruned
    (portal/nodes/retention.py). Finding counts are per severity, as the node page charts them."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="health_summaries")
    hour = models.DateTimeField()
    reports = models.PositiveIntegerField(default=0)
    clean_reports = models.PositiveIntegerField(default=0)
    fatal = models.PositiveIntegerField(default=0)
    warning = models.PositiveIntegerField(default=0)
    info = models.PositiveIntegerField(default=0)
    # The worst severity of any finding that hour ("" when none), and each check that failed
    # (a fatal or warning finding), sorted.
    worst = models.CharField(max_length=8, blank=True)
    checks_failed = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["node", "hour"]
        constraints = [models.UniqueConstraint(fields=["node", "hour"], name="health_summary_node_hour")]
        indexes = [models.Index(fields=["hour"], name="health_summary_hour")]

    def __str__(self) -> str:
        return f"{self.node_id} {self.hour:%Y-%m-%d %H}:00 {self.reports} reports"


class FindingCount(models.Model):
    """Running total of findings per node, check and severity, added to at intake.

    /metrics reads these (a few rows per node) instead of counting the findings table, which
    grows by hundreds of thousands of rows a day; and pruning old reports never lowers a
    Prometheus counter.
    """

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="finding_counts")
    check_name = models.CharField(max_length=64)
    severity = models.CharField(max_length=8, choices=Finding.Severity.choices)
    total = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "check_name", "severity"],
                                               name="finding_count_node_check_severity")]

    def __str__(self) -> str:
        return f"{self.node_id} {self.severity} {self.check_name}: {self.total}"


class NodeAction(models.Model):
    """Every drain, resume and alert, by a person or by the health policy: the node's history."""

    class Kind(models.TextChoices):
        DRAIN = "drain", "Drain"
        RESUME = "resume", "Resume"
        # Admins must look: the policy wanted to drain but the partition's automatic-drain cap
        # stopped it, or a responding node's health reports went stale.
        ALERT = "alert", "Alert"
        # Slurm showed the node DOWN or NOT_RESPONDING / responding again (policy's periodic check).
        DOWN = "down", "Down"
        UP = "up", "Up"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="actions")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    automatic = models.BooleanField(default=False)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.CharField(max_length=300, blank=True)
    ok = models.BooleanField(default=True)
    detail = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.node} {self.kind} {self.reason}"
