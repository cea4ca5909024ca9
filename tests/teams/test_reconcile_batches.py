"""The reconciler applies changes of one kind in one sacctmgr call where the cross product of
users and accounts is exactly right; what Slurm holds afterwards is read back from sacctmgr."""

from __future__ import annotations

import pytest

from portal.quotas.reconcile import Change, Plan, _batches, apply_plan, reconcile_teams
from portal.slurm import gateway
from portal.teams.models import Membership, Team, TeamPolicy
from tests.teams.conftest import account_row, coordinated_by, sacctmgr_write, users_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_teams(qt_names, unique, alice, bob):
    """qt-<unique>-0..2, each with alice as lead and bob as member, share 40, 2 GPUs."""
    teams = []
    for i in range(3):
        team = Team.objects.create(name=f"qt-{unique}-{i}")
        qt_names.append(team.name)
        Membership.objects.create(user=alice, team=team, role=Membership.Role.LEAD)
        Membership.objects.create(user=bob, team=team)
        TeamPolicy.objects.create(team=team, shares=40, max_gpus=2)
        teams.append(team)
    return teams


def _settle() -> None:
    # Other people's sacctmgr writes on the shared cluster were seen to make a concurrent write
    # vanish; a second run repairs that, so the counting below starts from a state that matches.
    for _ in range(3):
        if reconcile_teams().empty:
            return


def _writes(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real_cli = gateway.cli

    def counting(args: list[str]) -> str:
        if args[:2] == ["sacctmgr", "-i"]:
            calls.append(args)
        return real_cli(args)

    monkeypatch.setattr(gateway, "cli", counting)
    return calls


def test_it_repairs_drift_on_several_teams_with_one_call_per_kind(three_teams, monkeypatch):
    _settle()
    names = [t.name for t in three_teams]
    sacctmgr_write("modify", "account", "where", f"name={','.join(names)}", "cluster=portal", "set",
                   "fairshare=5", "GrpTRES=gres/gpu=9")
    sacctmgr_write("remove", "coordinator", f"account={','.join(names)}", "names=alice")
    sacctmgr_write("add", "coordinator", f"account={','.join(names)}", "names=bob")
    sacctmgr_write("remove", "user", "where", "name=bob", f"account={','.join(names)}", "cluster=portal")
    writes = _writes(monkeypatch)

    plan = reconcile_teams()

    assert len(plan.changes) == 12 and not plan.failed
    # limits, associations, coordinators added, coordinators removed: one call each
    assert [args[2:4] for args in writes] == [["modify", "account"], ["add", "user"], ["add", "coordinator"],
                                              ["remove", "coordinator"]]
    for name in names:
        assert account_row(name) == {"fairshare": "40", "grptres": {"gres/gpu": "2"}}
        assert users_of(name) == {"alice", "bob"}
    assert set(names) <= coordinated_by("alice")
    assert not set(names) & coordinated_by("bob")
    assert reconcile_teams().empty


def test_a_removal_batch_never_takes_a_pair_the_database_wants(three_teams, monkeypatch):
    # bob stays in team 0 only; alice stays lead everywhere. Removing bob from 1 and 2 may share a
    # call, but no call's product may reach (bob, team 0).
    _settle()
    first, second, third = three_teams
    Membership.objects.filter(user__username="bob", team__in=[second, third]).delete()
    writes = _writes(monkeypatch)
    reconcile_teams()
    assert [args[2:4] for args in writes] == [["remove", "user"]]
    assert users_of(first.name) == {"alice", "bob"}
    assert users_of(second.name) == users_of(third.name) == {"alice"}


def test_a_refused_batch_is_redone_change_by_change(three_teams):
    # The plan is made while all three accounts exist; one disappears before it is applied. The
    # batched `add user alice,bob account=a,b,c` is refused as a whole and redone pair by pair,
    # so only the changes on the missing account fail, each with Slurm's message.
    first, second, third = three_teams
    for team in three_teams:
        sacctmgr_write("add", "account", team.name, "cluster=portal")
    plan = reconcile_teams(dry_run=True)
    sacctmgr_write("remove", "account", "where", f"name={third.name}")

    apply_plan(plan)

    assert {change.account for change, _ in plan.failed} == {third.name}
    assert all(message for _, message in plan.failed)
    assert {str(c) for c, _ in plan.failed} >= {f"associate alice with {third.name}",
                                                f"associate bob with {third.name}"}
    assert users_of(first.name) == users_of(second.name) == {"alice", "bob"}
    assert {first.name, second.name} <= coordinated_by("alice")
    assert account_row(first.name)["fairshare"] == "40"


def test_every_change_of_a_plan_is_in_exactly_one_batch_qos_first_job_moves_last():
    """The budgets' changes (QOS, run-minutes, QOS lists, job moves) ride the batches too: a
    change left out of every batch would be planned, logged as done, and never made."""
    changes = [
        Change("add_qos", "portal-over-budget", priority=0),
        Change("set_qos_priority", "normal", priority=100),
        Change("add_account", "qt-a"),
        Change("set_limits", "qt-a", fairshare=70),
        Change("set_limits", "qt-b", fairshare=70),
        Change("set_limits", "qt-c", run_mins=(("gres/gpu", 0),)),
        Change("set_limits", "qt-d", qos=("portal-over-budget",), default_qos="portal-over-budget"),
        Change("add_association", "qt-a", "alice"),
        Change("add_coordinator", "qt-a", "alice"),
        Change("set_default", "qt-a", "bob"),
        Change("remove_coordinator", "qt-b", "carol"),
        Change("remove_association", "qt-b", "erin"),
        Change("remove_account", "qt-old"),
        Change("move_jobs", "qt-d", job_ids=("41", "42"), qos=("portal-over-budget",)),
    ]
    plan = Plan(changes=changes, keep_associations=frozenset({("alice", "qt-a")}),
                keep_coordinators=frozenset({("alice", "qt-a")}))
    batches = _batches(plan)
    batched = [c for batch in batches for c in batch.changes]
    assert sorted(map(str, batched)) == sorted(map(str, changes)) and len(batched) == len(changes)
    actions = [batch.changes[0].action for batch in batches]
    assert actions[:2] == ["add_qos", "set_qos_priority"] and actions[-1] == "move_jobs"
    limits = [batch.changes for batch in batches if batch.changes[0].action == "set_limits"]
    # Only accounts getting exactly the same settings share a call.
    assert sorted(len(group) for group in limits) == [1, 1, 2]
