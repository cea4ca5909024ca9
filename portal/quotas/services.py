"""Teams in the portal are accounts in Slurm; members are associations; policies are limits.

Setting a policy is audited field by field and hands the reconciler (portal/quotas/reconcile.py)
off to the worker once the change is committed, so it reaches Slurm within seconds; the beat
runs the same reconciler periodically, so a lost hand-off only delays it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from portal.infra.handoff import hand_off
from portal.quotas.reconcile import GPU_TRES, Plan, reconcile_teams
from portal.slurm import gateway
from portal.teams.models import PolicyChange, Team, TeamPolicy

RECONCILE_TASK = "workers.tasks.teams.reconcile_teams_task"
POLICY_FIELDS = ("shares", "max_gpus", "max_gpus_by_type", "gpu_hours_budget", "budget_period", "over_budget")
# Limits that `null` clears; the period and the over-budget mode always have a value.
CLEARABLE = {"shares", "max_gpus", "max_gpus_by_type", "gpu_hours_budget"}


class PolicyInvalid(Exception):
    """The change cannot be made; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{f}: {m[0]}" for f, m in errors.items()))
        self.errors = errors


def sync_teams_to_slurm(*, dry_run: bool = False, wait_for_coordinators: bool = True) -> Plan:
    """Make Slurm match the teams, members, leads and policies (see portal/quotas/reconcile.py).
    The worker passes wait_for_coordinators=False: no run of its waits for a full coordinator read."""
    return reconcile_teams(dry_run=dry_run, wait_for_coordinators=wait_for_coordinators)


def policy_values(policy: TeamPolicy | None) -> dict[str, Any]:
    """The policy's fields as JSON values; a team without a policy row shows the defaults."""
    policy = policy or TeamPolicy()
    return {name: getattr(policy, name) for name in POLICY_FIELDS}


def team_policy(team: Team) -> TeamPolicy | None:
    return TeamPolicy.objects.filter(team=team).first()


def _check_gpu_types(by_type: dict[str, int]) -> list[str]:
    # Slurm refuses a GrpTRES naming a TRES slurmdbd does not track; say so now, not in a log.
    known = gateway.gpu_tres_names()
    unknown = sorted(t for t in by_type if f"{GPU_TRES}:{t}" not in known)
    if not unknown:
        return []
    types = ", ".join(sorted(n.split(":", 1)[1] for n in known if ":" in n)) or "none"
    return [f"Slurm tracks no GPU type {', '.join(unknown)} (known: {types})."]


def _validate(changes: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    for name, value in changes.items():
        if name not in POLICY_FIELDS:
            errors[name] = ["Not a policy field."]
        elif value is None and name not in CLEARABLE:
            errors[name] = ["This field cannot be cleared; give a value."]
    if changes.get("max_gpus_by_type") and (problems := _check_gpu_types(changes["max_gpus_by_type"])):
        errors["max_gpus_by_type"] = problems
    if errors:
        raise PolicyInvalid(errors)


def update_team_policy(*, team: Team, changes: dict[str, Any], by) -> TeamPolicy:
    """Apply `changes` (only the fields given; None clears a limit) to the team's policy, record
    each field that really changed, and reconcile once committed."""
    _validate(changes)
    changes = {k: ({} if k == "max_gpus_by_type" and v is None else v) for k, v in changes.items()}
    with transaction.atomic():
        # Locks the row, so two admins' changes are audited against the value each replaced.
        policy, _ = TeamPolicy.objects.select_for_update().get_or_create(team=team)
        old = policy_values(policy)
        for name, value in changes.items():
            setattr(policy, name, value)
        policy.save()
        new = policy_values(policy)
        PolicyChange.objects.bulk_create(
            PolicyChange(team=team, team_name=team.name, changed_by=by, changed_by_name=by.get_username(),
                         field=name, old_value=old[name], new_value=new[name])
            for name in POLICY_FIELDS if old[name] != new[name])
        transaction.on_commit(lambda: hand_off(RECONCILE_TASK))
    return policy
