"""Teams in the portal are accounts in Slurm; members are associations.

The sync follows the desired/actual/diff pattern: compute what Slurm should hold from the
database, read what it does hold, and apply only the difference. "Already exists" is
success, so running it twice is harmless, and `dry_run` shows the plan without applying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portal.slurm import gateway
from portal.teams.models import Membership, Team


@dataclass
class SlurmSyncPlan:
    add_accounts: list[str] = field(default_factory=list)
    add_associations: list[tuple[str, str]] = field(default_factory=list)      # (user, account)
    remove_associations: list[tuple[str, str]] = field(default_factory=list)
    coordinators: list[tuple[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.add_accounts or self.add_associations or self.remove_associations
                    or self.coordinators)


def plan_slurm_sync() -> SlurmSyncPlan:
    actual = gateway.list_associations()
    accounts = {a.account for a in actual}
    user_assocs = {(a.user, a.account) for a in actual if a.user}
    teams = list(Team.objects.values_list("name", flat=True))
    members = list(Membership.objects.values_list("user__username", "team__name", "role"))
    desired = {(user, team) for user, team, _ in members}
    return SlurmSyncPlan(
        add_accounts=sorted(set(teams) - accounts),
        add_associations=sorted(desired - user_assocs),
        # Only accounts the portal manages are pruned; other sites' accounts are left alone.
        remove_associations=sorted((u, a) for u, a in user_assocs - desired if a in set(teams)),
        coordinators=sorted({(u, t) for u, t, role in members if role == Membership.Role.LEAD}
                            - gateway.list_coordinators()),
    )


def sync_teams_to_slurm(*, dry_run: bool = False) -> SlurmSyncPlan:
    plan = plan_slurm_sync()
    if dry_run:
        return plan
    for account in plan.add_accounts:
        gateway.ensure_account(account, description=f"portal team {account}")
    for user, account in plan.add_associations:
        gateway.ensure_association(user, account)
    for user, account in plan.coordinators:
        gateway.ensure_coordinator(user, account)
    for user, account in plan.remove_associations:
        gateway.remove_association(user, account)
    return plan
