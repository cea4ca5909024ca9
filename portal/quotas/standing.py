"""Where a team stands: what its page and the admin's team list show.

GPU-hours come from portal/quotas/usage.py; fair share comes from Slurm itself
(gateway.fair_share, i.e. sshare), because Slurm decides priorities and the portal only
explains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from math import isinf

from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from portal.infra.errors import slurm_error_text
from portal.jobs import explain
from portal.jobs.models import Job
from portal.quotas.charts import BurnDown, burn_down, day_points, hours_text, percent_text
from portal.quotas.usage import HOLDING, Usage, team_usage, teams_usage
from portal.slurm import gateway
from portal.slurm.errors import SlurmError
from portal.slurm.types import FairShareRow
from portal.teams.access import is_admin
from portal.teams.models import Membership, Team, TeamPolicy

# Pending reasons that mean "a limit holds it", not "the cluster is busy": Slurm's association
# and QOS limits, and whatever the budget enforcement writes (it names the budget).
LIMIT_PREFIXES = ("AssocGrp", "AssocMax", "QOSGrp", "QOSMax")
HELD_ROWS = 50
GENERIC_LIMIT_WORDS = {
    "AssocGrp": "Your team is at one of its limits in Slurm ({reason}). It starts when the team's other jobs "
                "free up room.",
    "AssocMax": "It is at a per-job or per-user limit of your team's account ({reason}).",
    "QOSGrp": "Its quality-of-service level is at one of its limits ({reason}).",
    "QOSMax": "It asks for more than its quality-of-service level allows a job or a user ({reason}).",
}


# ---------------------------------------------------------------- access

def may_see(user, team: Team) -> bool:
    """Members and leads see their team's page; admins see every team's."""
    return is_admin(user) or Membership.objects.filter(team=team, user=user).exists()


# ---------------------------------------------------------------- fair share

@dataclass(frozen=True)
class FairShare:
    """The team's account as sshare sees it, with the members' factors."""

    share: float | None              # of the cluster, 0..1 (NormShares)
    used: float | None               # of the cluster's recent use, 0..1 (EffectvUsage)
    level: float | None              # share / used; inf when unused
    factors: dict[str, float]        # member -> fair-share factor, 0..1
    words: str

    @property
    def factor_range(self) -> tuple[float, float] | None:
        values = sorted(self.factors.values())
        return (values[0], values[-1]) if values else None


def fair_share_words(share: float | None, used: float | None, level: float | None) -> str:
    """What the team's standing means for its jobs, in plain words."""
    if share is None or used is None:
        return "Slurm has no share for this team yet."
    figures = f"a {percent_text(share)} share of the cluster and {percent_text(used)} of its recent use"
    if level is None or isinf(level) or used == 0:
        return (f"Your team has {figures}: it has not used the cluster lately, so its waiting jobs go ahead of "
                "those of teams that have.")
    if level >= 1:
        return (f"Your team has {figures}: it used less than its share, so its waiting jobs go ahead of those of "
                "teams that used more of theirs.")
    return (f"Your team has {figures}: it used more than its share, so its waiting jobs queue behind those of "
            "teams that used less of theirs. This eases by itself as the older use fades (Slurm halves it "
            "over its decay half-life).")


def _fair_share(account: str, rows: list[FairShareRow]) -> FairShare | None:
    own = next((r for r in rows if r.account == account and not r.user), None)
    if own is None:
        return None
    factors = {r.user: r.fair_share for r in rows if r.account == account and r.user and r.fair_share is not None}
    return FairShare(share=own.norm_shares, used=own.effective_usage, level=own.level_fs, factors=factors,
                     words=fair_share_words(own.norm_shares, own.effective_usage, own.level_fs))


def read_fair_share(accounts: list[str] | None) -> tuple[dict[str, FairShare], str]:
    """({account: FairShare}, "") or ({}, why Slurm could not say)."""
    try:
        rows = gateway.fair_share(accounts)
    except SlurmError as exc:
        return {}, slurm_error_text(exc)
    names = accounts if accounts is not None else sorted({r.account for r in rows})
    found = {name: _fair_share(name, rows) for name in names}
    return {name: fs for name, fs in found.items() if fs}, ""


# ---------------------------------------------------------------- members and held jobs

@dataclass(frozen=True)
class MemberRow:
    username: str
    role: str                        # "Lead", "Member", or "Not a member" (former member, sbatch user)
    gpu_hours: float
    part: float                      # of the team's GPU-hours, 0..1
    running_jobs: int
    running_gpus: int
    factor: float | None


def _running_by_owner(team: Team) -> dict[str, tuple[int, int]]:
    rows = (Job.objects.filter(team=team, state__in=HOLDING, end_time__isnull=True)
            .values("owner__username").annotate(jobs=Count("id"), gpus=Sum(F("nodes") * F("gpus_per_node"))))
    return {r["owner__username"]: (r["jobs"], r["gpus"] or 0) for r in rows}


def member_rows(team: Team, usage: Usage, fair: FairShare | None) -> list[MemberRow]:
    """Every member, and anyone else whose jobs count this period; most GPU-hours first."""
    roles = {m.user.username: m.get_role_display()
             for m in Membership.objects.filter(team=team).select_related("user")}
    running = _running_by_owner(team)
    factors = fair.factors if fair else {}
    rows = [MemberRow(username=name, role=roles.get(name, "Not a member"),
                      gpu_hours=usage.by_user.get(name, 0.0),
                      part=usage.by_user.get(name, 0.0) / usage.gpu_hours if usage.gpu_hours else 0.0,
                      running_jobs=running.get(name, (0, 0))[0], running_gpus=running.get(name, (0, 0))[1],
                      factor=factors.get(name))
            for name in set(roles) | set(usage.by_user) | set(running)]
    return sorted(rows, key=lambda r: (-r.gpu_hours, -r.running_gpus, r.username))


@dataclass(frozen=True)
class HeldJob:
    job: Job
    words: str
    visible: bool                    # the viewer may open the job (owner, the team's lead, admin)


def limit_words(reason: str) -> str:
    if reason in explain.REASON_WORDS:
        return explain.reason_words(reason)
    for prefix, words in GENERIC_LIMIT_WORDS.items():
        if reason.startswith(prefix):
            return words.format(reason=reason)
    return explain.reason_words(reason)


def held_by_limits(team: Team, viewer, *, leads: bool) -> list[HeldJob]:
    """The team's waiting jobs that a limit (not a busy cluster) keeps from starting."""
    limited = Q(reason__icontains="budget")
    for prefix in LIMIT_PREFIXES:
        limited |= Q(reason__startswith=prefix)
    jobs = (Job.objects.filter(team=team, state="PENDING").filter(limited).select_related("owner")
            .order_by("submit_time", "id")[:HELD_ROWS])
    sees_all = leads or is_admin(viewer)
    return [HeldJob(job=j, words=limit_words(j.reason), visible=sees_all or j.owner_id == viewer.pk) for j in jobs]


# ---------------------------------------------------------------- the team page

@dataclass
class Standing:
    team: Team
    usage: Usage
    chart: BurnDown
    policy: TeamPolicy | None
    members: list[MemberRow]
    held: list[HeldJob]
    fair: FairShare | None
    fair_error: str
    run_out: datetime | None = None  # when the budget runs out at this pace, if before the reset
    hours: dict[str, str] = field(default_factory=dict)   # the headline figures as text

    @property
    def used_part(self) -> float | None:
        budget = self.usage.budget
        return None if not budget else self.usage.gpu_hours / budget


def run_out_at(usage: Usage) -> datetime | None:
    """When the budget is used up if the team keeps the pace it had so far this period."""
    elapsed = (usage.as_of - usage.start).total_seconds()
    if usage.budget is None or usage.gpu_hours <= 0 or elapsed <= 0 or usage.over_budget:
        return None
    moment = usage.start + (usage.as_of - usage.start) * (usage.budget / usage.gpu_hours)
    return moment if moment < usage.end else None


def team_standing(team: Team, viewer, *, now: datetime | None = None) -> Standing:
    now = now or timezone.now()
    usage = team_usage(team, now=now)
    series = day_points(usage)
    fair_map, fair_error = read_fair_share([team.name])
    fair = fair_map.get(team.name)
    leads = Membership.objects.filter(team=team, user=viewer, role=Membership.Role.LEAD).exists()
    hours = {"used": hours_text(usage.gpu_hours), "running": hours_text(usage.running_gpu_hours)}
    if usage.budget is not None:
        hours |= {"budget": hours_text(usage.budget), "left": hours_text(usage.left), "over": hours_text(-usage.left)}
    return Standing(team=team, usage=usage, chart=burn_down(usage, series),
                    policy=TeamPolicy.objects.filter(team=team).first(), members=member_rows(team, usage, fair),
                    held=held_by_limits(team, viewer, leads=leads), fair=fair, fair_error=fair_error,
                    run_out=run_out_at(usage), hours=hours)


# ---------------------------------------------------------------- the admin's list

SORTS = {
    "use": lambda r: (-r.usage.gpu_hours, r.team.name),
    "name": lambda r: (r.team.name,),
    "budget": lambda r: (r.used_part is None, -(r.used_part or 0), r.team.name),
    "running": lambda r: (-r.usage.running_gpus, r.team.name),
    "share": lambda r: (-(r.fair.share or 0) if r.fair else 1, r.team.name),
}


@dataclass
class TeamRow:
    team: Team
    usage: Usage
    policy: TeamPolicy | None
    fair: FairShare | None
    differences: int = 0

    @property
    def used_part(self) -> float | None:
        budget = self.usage.budget
        return None if not budget else self.usage.gpu_hours / budget


def teams_overview(sort: str, *, now: datetime | None = None) -> tuple[list[TeamRow], str]:
    """Every team side by side, sorted by `sort` (one of SORTS; anything else: by use), and why
    fair share is missing, if it is."""
    teams = list(Team.objects.all())
    usages = teams_usage(teams, now=now)
    policies = {p.team_id: p for p in TeamPolicy.objects.filter(team__in=teams)}
    fair, fair_error = read_fair_share(None)
    rows = [TeamRow(team=t, usage=usages[t.pk], policy=policies.get(t.pk), fair=fair.get(t.name)) for t in teams]
    return sorted(rows, key=SORTS.get(sort, SORTS["use"])), fair_error
