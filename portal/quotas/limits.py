"""A team's hard limits in numbers: the submit pre-check and the plain words for quota waits.

Slurm enforces every limit (portal/quotas/reconcile.py); this module only says ahead of time,
with the team's numbers, what Slurm would do. It counts the GPUs a team holds now (the
tracker's rows, a second or two behind Slurm) and reads usage through the usage contract
(portal/quotas/usage.py).
"""

from __future__ import annotations

from django.db.models import F, Sum

from portal.jobs.models import Job
from portal.jobs.quota import GpuAsk, QuotaExceeded
from portal.quotas.usage import HOLDING, Usage, team_usage
from portal.teams.models import Team, TeamPolicy


def hours(value: float) -> str:
    """812.4; small numbers keep two decimals so a test-sized budget does not read as 0."""
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def budget_sentence(team: str, usage: Usage) -> str:
    """'team vision has used 812.4 of 800 GPU-hours this month (resets Tue 1 Dec 00:00 UTC)'."""
    resets = usage.end.strftime("%a %-d %b %H:%M %Z")
    return (f"team {team} has used {hours(usage.gpu_hours)} of {usage.budget:g} GPU-hours this {usage.period} "
            f"(resets {resets})")


def held_gpus(team: Team, gpu_type: str = "") -> int:
    """GPUs the team's jobs hold now; with `gpu_type`, only jobs that asked for that type by name
    (the ones Slurm counts against a typed cap, see reconcile._policy_limits)."""
    jobs = Job.objects.filter(team=team, state__in=HOLDING, end_time__isnull=True, gpus_per_node__gt=0)
    if gpu_type:
        jobs = jobs.filter(gpu_type=gpu_type)
    return jobs.aggregate(n=Sum(F("nodes") * F("gpus_per_node")))["n"] or 0


def _gpu_word(count: int, gpu_type: str = "") -> str:
    kind = f"{gpu_type} GPU" if gpu_type else "GPU"
    return f"{count} {kind}{'s' if count != 1 else ''}"


def check_submit(team: Team, ask: GpuAsk) -> None:
    """Raise QuotaExceeded when the job would break a hard limit of its team now: a hard budget
    used up, max_gpus, or the cap of the GPU type it names. Jobs without GPUs pass: every
    limit the portal sets is on GPUs."""
    if ask.gpus == 0:
        return
    policy = TeamPolicy.objects.filter(team=team).first()
    if policy is None:
        return
    if policy.gpu_hours_budget is not None and policy.over_budget == TeamPolicy.OverBudget.HARD:
        usage = team_usage(team)
        if usage.over_budget == TeamPolicy.OverBudget.HARD:
            raise QuotaExceeded(f"T{budget_sentence(team.name, usage)[1:]}: the budget is used up, so new GPU "
                                "jobs are refused until it resets or an admin raises it.",
                                limit="gpu_hours_budget")
    if policy.max_gpus is not None:
        held = held_gpus(team)
        if held + ask.gpus > policy.max_gpus:
            raise QuotaExceeded(f"Team {team.name} uses {held} of {_gpu_word(policy.max_gpus)}; this job asks "
                                f"for {ask.gpus}.", limit="max_gpus")
    cap = (policy.max_gpus_by_type or {}).get(ask.gpu_type) if ask.gpu_type else None
    if cap is not None:
        held = held_gpus(team, ask.gpu_type)
        if held + ask.gpus > cap:
            raise QuotaExceeded(f"Team {team.name} uses {held} of {_gpu_word(cap, ask.gpu_type)}; this job asks "
                                f"for {ask.gpus}.", limit="max_gpus_by_type")


# ---------------------------------------------------------------- why a job waits, with numbers

def _cap_words(team: Team, policy: TeamPolicy, ask: GpuAsk) -> str:
    cap = (policy.max_gpus_by_type or {}).get(ask.gpu_type) if ask.gpu_type else None
    if cap is not None and (policy.max_gpus is None or held_gpus(team, ask.gpu_type) + ask.gpus > cap):
        return (f"Your team {team.name} is using {held_gpus(team, ask.gpu_type)} of its "
                f"{_gpu_word(cap, ask.gpu_type)}; this job starts when some of them finish.")
    if policy.max_gpus is None:
        return ""
    return (f"Your team {team.name} is using {held_gpus(team)} of its {_gpu_word(policy.max_gpus)}; this job "
            "starts when some of them finish.")


def team_wait_words(reason: str, team: Team, ask: GpuAsk) -> str:
    """The team's numbers for a quota wait, or '' when the portal knows none (the caller then
    uses the generic words). Reasons: AssocGrpGRES (a GPU cap), AssocGrpGRESRunMinutes (a
    used-up hard budget) and Priority/Resources (a used-up soft budget: the over-budget QOS)."""
    policy = TeamPolicy.objects.filter(team=team).first()
    if policy is None:
        return ""
    if reason == "AssocGrpGRES":
        return _cap_words(team, policy, ask)
    if policy.gpu_hours_budget is None or reason not in {"AssocGrpGRESRunMinutes", "Priority", "Resources"}:
        return ""
    usage = team_usage(team)
    if reason == "AssocGrpGRESRunMinutes" and usage.over_budget == TeamPolicy.OverBudget.HARD:
        return (f"Your {budget_sentence(team.name, usage)}, so its new GPU jobs do not start. This job starts "
                "when the budget resets or an admin raises it; running jobs keep running.")
    if reason in {"Priority", "Resources"} and usage.over_budget == TeamPolicy.OverBudget.SOFT:
        return (f"Your {budget_sentence(team.name, usage)}, so its jobs run at low priority, behind other "
                "teams' jobs, until the budget resets or an admin raises it.")
    return ""
