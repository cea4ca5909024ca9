"""Who may see and control which jobs: the owner, the team's lead, and admins.

Every view and API endpoint goes through these helpers, so a foreign job is a 404 everywhere
(never a 403 that would confirm the job exists).
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from portal.jobs.models import Job, JobTemplate
from portal.teams.access import is_admin  # also re-exported: views and APIs import it from here
from portal.teams.models import Membership, Team


def led_team_ids(user) -> list[int]:
    return list(Membership.objects.filter(user=user, role=Membership.Role.LEAD).values_list("team_id", flat=True))


def member_teams(user) -> QuerySet[Team]:
    """Teams the user may submit to."""
    return Team.objects.filter(memberships__user=user).order_by("name")


def visible_jobs(user) -> QuerySet[Job]:
    if is_admin(user):
        return Job.objects.all()
    led = led_team_ids(user)
    return Job.objects.filter(Q(owner=user) | Q(team_id__in=led)) if led else Job.objects.filter(owner=user)


def get_job_for_user(user, job_id: int) -> Job:
    """The job if the user may see it; Job.DoesNotExist otherwise (callers answer 404)."""
    return visible_jobs(user).select_related("owner", "team").get(pk=job_id)


def can_control(user, job: Job) -> bool:
    return is_admin(user) or job.owner_id == user.id or job.team_id in led_team_ids(user)


def visible_templates(user) -> QuerySet[JobTemplate]:
    if is_admin(user):
        return JobTemplate.objects.select_related("team")
    return JobTemplate.objects.filter(team__memberships__user=user).select_related("team")


def can_manage_templates(user, team: Team) -> bool:
    return is_admin(user) or team.pk in led_team_ids(user)
