"""The reconciler makes Slurm match the teams; every field it sends is read back from sacctmgr."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command

from portal.quotas import coordinators
from portal.quotas.reconcile import reconcile_teams
from portal.quotas.services import RECONCILE_TASK
from portal.slurm import gateway
from portal.slurm.types import CoordinatorChange
from portal.teams.models import Membership, RetiredTeam, Team, TeamPolicy
from tests.conftest import wait_until
from tests.teams.conftest import (
    account_exists,
    account_row,
    coordinated_by,
    default_account,
    sacctmgr_write,
    users_of,
)
from workers.tasks.teams import reconcile_teams_task, refresh_coordinators_task

pytestmark = pytest.mark.django_db

DEMO_ACCOUNTS = {"vision", "nlp", "ops", "root", "portaltest"}


def test_it_creates_account_members_lead_share_and_caps(capped):
    reconcile_teams()
    assert account_row(capped.name) == {"fairshare": "70", "grptres": {"gres/gpu": "4", "gres/gpu:h100": "6"}}
    assert users_of(capped.name) == {"alice", "bob"}
    assert capped.name in coordinated_by("alice")
    assert capped.name not in coordinated_by("bob")


def _spy(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real_cli = gateway.cli
    monkeypatch.setattr(gateway, "cli", lambda args: calls.append(args) or real_cli(args))
    return calls


def _reread(calls: list[list[str]]) -> set[str]:
    """Users whose coordinators a run read again by name."""
    return {name for args in calls if args[4:7] == ["user", "withcoord", "where"]
            for name in args[7].removeprefix("name=").split(",")}


def test_a_second_run_writes_nothing_and_does_not_reread_the_rights_it_gave_itself(capped, make_user, unique,
                                                                                   monkeypatch):
    # A lead no earlier test has named, so no row another test left in the log names them.
    lead = make_user(f"qtl{unique}")
    Membership.objects.create(user=lead, team=capped, role=Membership.Role.LEAD)
    try:
        reconcile_teams()   # the first run reads every coordinator, and makes alice and the lead ones
        assert capped.name in coordinated_by(lead.username)
        calls = _spy(monkeypatch)
        assert reconcile_teams().empty
    finally:
        # Before the team's account goes: Slurm keeps an account that is some user's default.
        sacctmgr_write("remove", "user", lead.username)
    assert all(args[:4] == ["sacctmgr", "-n", "-P", "show"] for args in calls)  # no write at all
    # The GPU types only because this policy caps one; the associations; slurmdbd's log since
    # the last read; the users without coordinators. The lead's new rights are in the copy
    # already: the log row they left is known as the reconciler's own, not read again.
    assert [args[4] for args in calls][:4] == ["tres", "associations", "transaction", "user"]
    assert "withcoord" not in calls[3]
    assert lead.username not in _reread(calls)


def test_rights_taken_by_hand_after_the_reconciler_gave_them_are_read_again_and_repaired(capped, monkeypatch):
    monkeypatch.setattr(coordinators, "MARGIN_S", 0)
    reconcile_teams()
    sacctmgr_write("remove", "coordinator", f"account={capped.name}", "names=alice")
    calls = _spy(monkeypatch)
    plan = reconcile_teams()
    assert "alice" in _reread(calls)
    assert [(c.action, c.user, c.account) for c in plan.changes] == [("add_coordinator", "alice", capped.name)]
    assert capped.name in coordinated_by("alice")


def test_a_log_row_matches_our_own_write_only_when_our_last_write_of_the_pair_was_of_its_kind(capped):
    reconcile_teams()   # a copy to record writes in
    row = CoordinatorChange("remove", frozenset({"alice"}), frozenset({capped.name}))
    coordinators.wrote("remove", ["alice"], [capped.name])
    assert coordinators._ours(row, cache.get(coordinators._key())["own"])
    # We gave the rights back since: a removal in the log is then someone else's, to re-read.
    coordinators.wrote("add", ["alice"], [capped.name])
    kept = cache.get(coordinators._key())
    assert not coordinators._ours(row, kept["own"])
    assert capped.name in kept["coords"]["alice"]
    # A removal naming no account takes every right of the user: never taken as ours.
    assert not coordinators._ours(CoordinatorChange("other", frozenset({"alice"}), frozenset()), kept["own"])


def test_a_copy_beat_has_not_refreshed_for_an_hour_makes_the_run_read_every_coordinator(capped, monkeypatch):
    reconcile_teams()
    kept = cache.get(coordinators._key())
    cache.set(coordinators._key(), {**kept, "full_at": kept["full_at"] - coordinators.STALE_AFTER_S - 1})
    calls = _spy(monkeypatch)
    assert reconcile_teams().empty
    assert [args[4:6] for args in calls if args[4] == "user"] == [["user", "withcoord"]]
    assert "transaction" not in [args[4] for args in calls]


def test_the_refresh_task_rereads_every_coordinator_and_reports_what_the_copy_missed(
        capped, make_user, unique, celery_worker_session):
    lead = make_user(f"qtl{unique}")   # named in no log row of another test
    Membership.objects.create(user=lead, team=capped, role=Membership.Role.LEAD)
    try:
        reconcile_teams()
        kept = cache.get(coordinators._key())
        # What only an edit behind slurmdbd's log could do: the copy loses the lead's rights.
        coords = {user: accounts for user, accounts in kept["coords"].items() if user != lead.username}
        cache.set(coordinators._key(), {**kept, "coords": coords})
        result = refresh_coordinators_task.delay().get(timeout=60)
    finally:
        sacctmgr_write("remove", "user", lead.username)
    assert result["missed"] == 1 and result["users"] >= 3
    assert capped.name in cache.get(coordinators._key())["coords"][lead.username]


def test_a_change_the_log_explains_is_not_reported_as_missed(capped, celery_worker_session):
    reconcile_teams()
    sacctmgr_write("remove", "coordinator", f"account={capped.name}", "names=alice")   # by hand, logged
    assert refresh_coordinators_task.delay().get(timeout=60)["missed"] == 0
    assert capped.name not in cache.get(coordinators._key())["coords"].get("alice", [])


def test_a_cleared_limit_becomes_no_limit(capped):
    reconcile_teams()
    TeamPolicy.objects.filter(team=capped).update(shares=None, max_gpus=None, max_gpus_by_type={})
    reconcile_teams()
    assert account_row(capped.name) == {"fairshare": "1", "grptres": {}}
    assert reconcile_teams().empty


def test_one_type_cap_changes_alone(capped):
    reconcile_teams()
    TeamPolicy.objects.filter(team=capped).update(max_gpus_by_type={"h100": 5})
    plan = reconcile_teams()
    assert [str(c) for c in plan.changes] == [
        f"set GrpTRES=gres/gpu:h100=5 on {capped.name} (Slurm has Fairshare=70 GrpTRES=gres/gpu=4,gres/gpu:h100=6)"]
    assert account_row(capped.name)["grptres"] == {"gres/gpu": "4", "gres/gpu:h100": "5"}


def test_when_every_gpu_type_is_capped_their_sum_caps_all_gpus(capped):
    # This cluster has one GPU type (h100): a cap on it is a cap on every GPU, untyped requests too.
    TeamPolicy.objects.filter(team=capped).update(max_gpus=None, max_gpus_by_type={"h100": 3})
    reconcile_teams()
    assert account_row(capped.name)["grptres"] == {"gres/gpu": "3", "gres/gpu:h100": "3"}
    TeamPolicy.objects.filter(team=capped).update(max_gpus=2)
    reconcile_teams()
    assert account_row(capped.name)["grptres"] == {"gres/gpu": "2", "gres/gpu:h100": "3"}


def test_drift_made_by_hand_is_shown_by_a_dry_run_and_repaired(capped):
    reconcile_teams()
    sacctmgr_write("modify", "account", "where", f"name={capped.name}", "cluster=portal", "set",
                   "fairshare=5", "GrpTRES=gres/gpu=99,gres/gpu:h100=-1")
    sacctmgr_write("add", "coordinator", f"account={capped.name}", "names=bob")
    sacctmgr_write("remove", "user", "bob", "where", f"account={capped.name}", "cluster=portal")

    plan = reconcile_teams(dry_run=True)
    shown = [str(c) for c in plan.changes]
    assert f"set Fairshare=70 GrpTRES=gres/gpu=4,gres/gpu:h100=6 on {capped.name} " \
           "(Slurm has Fairshare=5 GrpTRES=gres/gpu=99)" in shown
    assert f"associate bob with {capped.name}" in shown
    assert f"take coordinator rights on {capped.name} from bob (Slurm has coordinator)" in shown
    assert account_row(capped.name)["fairshare"] == "5"   # a dry run changes nothing

    reconcile_teams()
    assert account_row(capped.name) == {"fairshare": "70", "grptres": {"gres/gpu": "4", "gres/gpu:h100": "6"}}
    assert users_of(capped.name) == {"alice", "bob"}
    assert capped.name not in coordinated_by("bob")


def test_a_coordinator_made_by_hand_for_someone_the_portal_does_not_know_is_found_and_removed(capped):
    # carol is a Slurm user (nlp) with no portal account and no association on this team: the
    # coordinator read must still cover her.
    reconcile_teams()
    sacctmgr_write("add", "coordinator", f"account={capped.name}", "names=carol")
    assert capped.name in coordinated_by("carol")
    shown = [str(c) for c in reconcile_teams(dry_run=True).changes]
    assert f"take coordinator rights on {capped.name} from carol (Slurm has coordinator)" in shown
    reconcile_teams()
    assert capped.name not in coordinated_by("carol")


def test_a_demoted_lead_loses_coordinator_rights(qt_team):
    reconcile_teams()
    assert qt_team.name in coordinated_by("alice")
    Membership.objects.filter(team=qt_team, user__username="alice").update(role=Membership.Role.MEMBER)
    reconcile_teams()
    assert qt_team.name not in coordinated_by("alice")
    assert "alice" in users_of(qt_team.name)   # still a member


def test_a_removed_member_loses_the_association(qt_team):
    reconcile_teams()
    Membership.objects.filter(team=qt_team, user__username="bob").delete()
    reconcile_teams()
    assert users_of(qt_team.name) == {"alice"}


def test_a_deleted_team_loses_its_account_and_associations(qt_team):
    reconcile_teams()
    name = qt_team.name
    qt_team.delete()
    plan = reconcile_teams()
    assert [str(c) for c in plan.changes] == [f"remove account {name} (team deleted)"]
    assert not account_exists(name)
    assert users_of(name) == set()
    assert name not in coordinated_by("alice")
    assert reconcile_teams().empty


def test_an_account_without_the_portals_description_is_never_removed(qt_names, unique):
    name = f"qt-site-{unique}"
    qt_names.append(name)
    sacctmgr_write("add", "account", name, "description=a site account", "cluster=portal")
    RetiredTeam.objects.create(name=name)
    assert reconcile_teams().changes == []
    assert account_exists(name)


def test_accounts_of_teams_this_database_does_not_know_are_left_alone(capped):
    plan = reconcile_teams(dry_run=True)
    assert not {c.account for c in plan.changes} & DEMO_ACCOUNTS


def test_the_command_prints_the_plan_and_changes_nothing_on_dry_run(capped):
    out = StringIO()
    call_command("sync_slurm_accounts", "--dry-run", stdout=out)
    assert f"would add account {capped.name}" in out.getvalue()
    assert f"would set Fairshare=70 GrpTRES=gres/gpu=4,gres/gpu:h100=6 on {capped.name}" in out.getvalue()
    assert not account_exists(capped.name)
    call_command("sync_slurm_accounts", stdout=StringIO())
    out = StringIO()
    call_command("sync_slurm_accounts", "--dry-run", stdout=out)
    assert "Slurm already matches" in out.getvalue()


def test_a_team_without_a_policy_keeps_the_limits_slurm_has(qt_team):
    reconcile_teams()
    sacctmgr_write("modify", "account", "where", f"name={qt_team.name}", "cluster=portal", "set", "fairshare=5")
    assert not [c for c in reconcile_teams().changes if c.action == "set_limits"]
    assert account_row(qt_team.name)["fairshare"] == "5"


def test_a_team_made_again_under_a_deleted_name_is_not_removed(qt_team):
    name = qt_team.name
    qt_team.delete()
    assert RetiredTeam.objects.filter(name=name).exists()
    Team.objects.create(name=name)
    assert not RetiredTeam.objects.filter(name=name).exists()


def test_beat_runs_the_task_the_api_hands_off(settings):
    assert settings.CELERY_BEAT_SCHEDULE["reconcile-teams"]["task"] == reconcile_teams_task.name == RECONCILE_TASK


def test_a_cold_worker_run_reconciles_all_but_coordinators_and_asks_for_the_full_read(capped,
                                                                                     celery_worker_session):
    # No copy of the coordinators (every test starts so): the worker's run does not wait the
    # ~10 s a full read takes at 1,000 teams; it applies the rest and asks the worker for it.
    assert reconcile_teams_task.apply().get() == {"applied": 4, "failed": 0}
    assert account_row(capped.name) == {"fairshare": "70", "grptres": {"gres/gpu": "4", "gres/gpu:h100": "6"}}
    assert users_of(capped.name) == {"alice", "bob"}
    assert capped.name not in coordinated_by("alice")
    wait_until(lambda: cache.get(coordinators._key()), timeout=60, what="the worker's full coordinator read")
    assert reconcile_teams_task.apply().get() == {"applied": 1, "failed": 0}
    assert capped.name in coordinated_by("alice")
    assert reconcile_teams_task.apply().get() == {"applied": 0, "failed": 0}


def test_the_command_line_waits_for_the_full_read_and_reconciles_everything_at_once(capped):
    plan = reconcile_teams()   # what `manage.py sync_slurm_accounts` runs
    assert plan.coordinators_known and ("add_coordinator", "alice") in {(c.action, c.user) for c in plan.changes}
    assert capped.name in coordinated_by("alice")


def test_a_member_leaving_the_team_of_their_default_account_gets_another_default(qt_names, unique, make_user):
    # A Slurm-only user of our own: the demo users' defaults (vision, nlp) must not change.
    user, first, second = make_user(f"qtu{unique}"), Team.objects.create(name=f"qt-a{unique}"), \
        Team.objects.create(name=f"qt-b{unique}")
    qt_names.extend([first.name, second.name])
    Membership.objects.create(user=user, team=first)
    reconcile_teams()
    Membership.objects.create(user=user, team=second)
    reconcile_teams()
    try:
        assert default_account(user.username) == first.name   # Slurm's: the first association made
        Membership.objects.filter(user=user, team=first).delete()
        plan = reconcile_teams()
        assert f"make {second.name} the default account of {user.username} (Slurm has default {first.name})" in \
            [str(c) for c in plan.changes]
        assert default_account(user.username) == second.name
        assert users_of(first.name) == set()
    finally:
        sacctmgr_write("remove", "user", user.username)
