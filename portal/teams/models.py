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
