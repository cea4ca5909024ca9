"""/api/v1/teams/{name}/policy: a team's fair share and limits (admins set them; members read them).
/api/v1/teams/{name}/usage: its GPU-hours in a budget period (members and admins)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, NonNegativeInt, StringConstraints, WithJsonSchema

from portal.quotas.services import PolicyInvalid, policy_values, team_policy, update_team_policy
from portal.quotas.usage import period_bounds, site_zone, team_usage
from portal.teams.access import is_admin
from portal.teams.models import Membership, PolicyChange, Team, slurm_name

router = Router(tags=["teams"])

# A GPU type as gres.conf names it ("h100"); it becomes part of a sacctmgr argument.
GPU_TYPE = r"^[A-Za-z0-9_.-]{1,32}$"
GpuCount = Annotated[int, Field(ge=0, le=1_000_000)]
# The schema pydantic writes for this map lets keys that miss the pattern through (no
# additionalProperties: false), so it is written out here and says what validation does.
GpuCaps = Annotated[
    dict[Annotated[str, StringConstraints(pattern=GPU_TYPE)], GpuCount], Field(max_length=32),
    WithJsonSchema({"type": "object", "maxProperties": 32, "additionalProperties": False,
                    "patternProperties": {GPU_TYPE: {"type": "integer", "minimum": 0, "maximum": 1_000_000}}}),
]


class Error(Schema):
    detail: str


class FieldErrors(Schema):
    detail: str
    errors: dict[str, list[str]]


class PolicyIn(Schema):
    """Fields left out stay as they are; `null` clears a limit."""

    model_config = ConfigDict(extra="forbid")

    shares: int | None = Field(None, ge=1, le=1_000_000,
                               description="Fair share (Slurm Fairshare); null: Slurm's default, 1")
    max_gpus: NonNegativeInt | None = Field(None, le=1_000_000, description="GPUs the team may hold at once")
    max_gpus_by_type: GpuCaps | None = Field(
        None, description='GPUs at once per type, e.g. {"h100": 8}; replaces the whole map')
    gpu_hours_budget: float | None = Field(None, ge=0, le=1e9, description="GPU-hours per budget period")
    # Never null (they always have a value), so the schema says so and null is a 422.
    budget_period: Literal["month", "week"] = Field(None, description="The budget's period (default month)")
    over_budget: Literal["hard", "soft"] = Field(
        None, description="hard: new jobs refused and held; soft: jobs run at low priority (default hard)")


class PolicyOut(Schema):
    team: str
    shares: int | None
    max_gpus: int | None
    max_gpus_by_type: dict[str, int]
    gpu_hours_budget: float | None
    budget_period: str
    over_budget: str
    updated_at: datetime | None = Field(None, description="null: no policy set yet (Slurm's own settings apply)")


def _team(name: str) -> Team:
    try:
        slurm_name(name)
        return Team.objects.get(name=name)
    except (ValidationError, Team.DoesNotExist):  # an invalid name is no team either
        raise HttpError(404, "No such team.") from None


def _policy_out(team: Team) -> dict:
    policy = team_policy(team)
    return {"team": team.name, **policy_values(policy), "updated_at": policy.updated_at if policy else None}


class PolicyChangeOut(Schema):
    field: str
    old_value: object | None = Field(None, description="The value before; null: not set")
    new_value: object | None = Field(None, description="The value after; null: cleared")
    changed_by: str = Field(..., validation_alias="changed_by_name")
    changed_at: datetime


@router.get("/teams/{name}/policy/changes", response={200: list[PolicyChangeOut], 403: Error, 404: Error},
            summary="A team's policy audit trail, newest first (admins)")
def list_policy_changes(request: HttpRequest, name: str, limit: int = Query(100, ge=1, le=1000)):
    if not is_admin(request.auth):
        raise HttpError(403, "Only admins see the policy audit trail.")
    return PolicyChange.objects.filter(team=_team(name))[:limit]


@router.get("/teams/{name}/policy", response={200: PolicyOut, 403: Error, 404: Error},
            summary="A team's fair share and limits (its members and admins)")
def get_policy(request: HttpRequest, name: str):
    team = _team(name)
    if not is_admin(request.auth) and not Membership.objects.filter(team=team, user=request.auth).exists():
        raise HttpError(403, "Only the team's members and admins see its policy.")
    return _policy_out(team)


@router.put("/teams/{name}/policy", response={200: PolicyOut, 400: FieldErrors, 403: Error, 404: Error},
            summary="Set a team's fair share and limits (admins)")
def put_policy(request: HttpRequest, name: str, payload: PolicyIn):
    """Only the fields given change; `null` clears a limit. Every change is audited, and Slurm
    holds the new limits within seconds (the reconciler runs once the change is saved)."""
    if not is_admin(request.auth):
        raise HttpError(403, "Only admins set team policies.")
    team = _team(name)
    try:
        update_team_policy(team=team, changes=payload.model_dump(include=payload.model_fields_set), by=request.auth)
    except PolicyInvalid as exc:
        return Status(400, {"detail": str(exc), "errors": exc.errors})
    return _policy_out(team)


class UserUsageOut(Schema):
    user: str
    gpu_hours: float


class DayUsageOut(Schema):
    day: date
    gpu_hours: float
    cumulative: float = Field(..., description="GPU-hours from the period's start to this day's end")


class UsageOut(Schema):
    team: str
    period: str = Field(..., description="month or week (from Monday)")
    start: datetime = Field(..., description="The period's first moment: local midnight, with the site's offset")
    end: datetime = Field(..., description="The moment after the period (exclusive)")
    time_zone: str = Field(..., description="The site's zone, in which periods and days are cut")
    as_of: datetime
    gpu_hours: float = Field(..., description="Finished work plus running jobs so far")
    running_gpu_hours: float = Field(..., description="The running jobs' part of gpu_hours")
    running_gpus: int
    budget: float | None = Field(None, description="GPU-hours per period; null: no budget")
    left: float | None
    over_budget: str = Field(..., description='"" while within budget; else the policy\'s "hard" or "soft"')
    by_type: dict[str, float] = Field(..., description='GPU-hours per GPU type ("any": no type asked for)')
    by_user: list[UserUsageOut] = Field(..., description="Most first")
    by_day: list[DayUsageOut] = Field(..., description="Each day from the start to as_of's day")


def _as_of(at: datetime | None, period: str | None, team: Team) -> datetime:
    """The moment to count up to: now, or the end of the past period holding `at`."""
    now = timezone.now()
    if at is None:
        return now
    if timezone.is_naive(at):
        at = at.replace(tzinfo=site_zone())   # a bare date-time is the site's local time
    if at > now:
        raise HttpError(400, "at is in the future; usage is known up to now.")
    policy = team_policy(team)
    _, end = period_bounds(period or (policy.budget_period if policy else "month"), at)
    return min(now, end - timedelta(microseconds=1))


@router.get("/teams/{name}/usage", response={200: UsageOut, 400: Error, 403: Error, 404: Error},
            summary="A team's GPU-hours in its budget period (its members and admins)")
def get_usage(request: HttpRequest, name: str, period: Literal["month", "week"] | None = None,
              at: datetime | None = None):
    """Finished jobs (every run of a requeued one) plus running jobs so far, by GPU type, user and
    day. `period` defaults to the team's budget period; `at` picks the period holding that moment
    (a past month or week, counted to its end)."""
    team = _team(name)
    if not is_admin(request.auth) and not Membership.objects.filter(team=team, user=request.auth).exists():
        raise HttpError(403, "Only the team's members and admins see its usage.")
    usage = team_usage(team, now=_as_of(at, period, team), period=period)
    return {**{key: getattr(usage, key) for key in (
        "team", "period", "start", "end", "as_of", "gpu_hours", "running_gpu_hours", "running_gpus", "budget",
        "left", "over_budget", "by_type", "by_day")},
        "time_zone": str(site_zone()),
        "by_user": [{"user": user, "gpu_hours": hours} for user, hours in usage.by_user.items()]}
