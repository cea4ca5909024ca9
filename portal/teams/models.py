"""Teams are Slurm accounts; memberships are Slurm associations."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

# Slurm account names: lower case, no spaces or commas (sacctmgr splits on them).
slurm_name = RegexValidator(r"^[a-z][a-z0-9_-]{0,63}$",
                            "Use lower-case letters, digits, '-' and '_', starting with a letter.")


class Team(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[slurm_name],
                            help_text="Also the Slurm account name.")
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        LEAD = "lead", "Lead"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class TeamPolicy(models.Model):
    """A team's fair share and limits. The reconciler (portal/quotas/reconcile.py) turns them into
    Fairshare and GrpTRES on the team's account association. A team without a policy row keeps
    whatever Slurm holds: the portal only manages limits an admin has set."""

    class Period(models.TextChoices):
        MONTH = "month", "Month"
        WEEK = "week", "Week"

    class OverBudget(models.TextChoices):
        HARD = "hard", "Hard: no new jobs"
        SOFT = "soft", "Soft: low priority"

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="policy")
    # None means "not set": Slurm's default share (1), no cap, no budget.
    shares = models.PositiveIntegerField(null=True, blank=True)
    max_gpus = models.PositiveIntegerField(null=True, blank=True)
    max_gpus_by_type = models.JSONField(default=dict, blank=True, help_text='e.g. {"h100": 8}')
    gpu_hours_budget = models.FloatField(null=True, blank=True)
    budget_period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    over_budget = models.CharField(max_length=8, choices=OverBudget.choices, default=OverBudget.HARD)
    # What the account's association held ({"qos": [...], "default": "..."}) when the reconciler
    # put the team into the over-budget QOS, so the switch back restores a QOS list an admin had
    # set by hand rather than a generic one; {} while no soft switch is in force.
    qos_before_budget = models.JSONField(default=dict, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"policy of {self.team}"


class PolicyChange(models.Model):
    """One audited change of one policy field. Names are copied, so the trail outlives the team
    and the user."""

    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, related_name="policy_changes")
    team_name = models.CharField(max_length=64)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                   related_name="+")
    changed_by_name = models.CharField(max_length=150)
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    field = models.CharField(max_length=32)
    old_value = models.JSONField(null=True)
    new_value = models.JSONField(null=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.team_name}.{self.field}: {self.old_value!r} -> {self.new_value!r}"


class RetiredTeam(models.Model):
    """A deleted team's name, so the reconciler removes its Slurm account. Without it a team
    missing from the database could be a deleted one or one this database never knew (another
    site's account, a fresh install), and only the first may be removed."""

    name = models.CharField(max_length=64, unique=True)
    retired_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class UsageDay(models.Model):
    """GPU-seconds of finished work per team, user, GPU type and day (in the site's time zone):
    the rollup team_usage sums, so a team page reads a few hundred rows however long the job
    history is. Fed by portal/quotas/rollup.py; `manage.py rebuild_usage` makes it anew."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    gpu_type = models.CharField(max_length=32, blank=True)
    day = models.DateField()
    gpu_seconds = models.FloatField(default=0.0)

    class Meta:
        # Leads with (team, day): the one shape every reader asks for (a team's period).
        constraints = [models.UniqueConstraint(fields=["team", "day", "user", "gpu_type"], name="usage_day_bucket")]

    def __str__(self) -> str:
        return f"{self.team_id}/{self.user_id}/{self.gpu_type or 'any'} {self.day}: {self.gpu_seconds:.0f} GPU-s"


class UsageFold(models.Model):
    """What one finished job added to UsageDay, per day. Folding a job again first takes its old
    rows back out, so a job folded twice counts once and a job whose figures changed (sacct's
    elapsed arriving, a late requeue record) is corrected. The job id is a plain column, not a
    foreign key: deleting old jobs must not wait on a million-row cascade here."""

    job_id = models.BigIntegerField()
    day = models.DateField()
    team_id = models.BigIntegerField()
    user_id = models.BigIntegerField()
    gpu_type = models.CharField(max_length=32, blank=True)
    gpu_seconds = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job_id", "day"], name="usage_fold_job_day")]

    def __str__(self) -> str:
        return f"job {self.job_id} on {self.day}: {self.gpu_seconds:.0f} GPU-s"


class UsageCursor(models.Model):
    """How far the rollup has read: jobs changed up to `changed_at`, attempts up to `attempt_id`.
    In the database, not Redis, so it commits with the rows it accounts for."""

    name = models.CharField(max_length=32, primary_key=True)
    changed_at = models.DateTimeField(null=True)
    attempt_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"usage cursor {self.name}: {self.changed_at}, attempt {self.attempt_id}"
