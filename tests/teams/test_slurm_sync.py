"""Teams and memberships mirror into Slurm accounts and associations."""

from __future__ import annotations

import subprocess
from io import StringIO

import pytest
from django.core.management import call_command

from portal.slurm import gateway
from portal.teams.models import Membership, Team
from portal.teams.services import plan_slurm_sync, sync_teams_to_slurm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("slurm_accounts")]

TEAM = "portaltest"


@pytest.fixture
def team_with_alice(alice):
    team = Team.objects.create(name=TEAM)
    Membership.objects.create(user=alice, team=team, role=Membership.Role.LEAD)
    yield team
    gateway.remove_association("alice", TEAM)


def assocs():
    return {(a.user, a.account) for a in gateway.list_associations()}


def test_it_creates_the_account_association_and_coordinator(team_with_alice):
    sync_teams_to_slurm()
    assert ("alice", TEAM) in assocs()
    assert ("alice", TEAM) in gateway.list_coordinators()


def test_a_second_sync_has_nothing_to_do(team_with_alice):
    sync_teams_to_slurm()
    plan = plan_slurm_sync()
    assert plan.add_accounts == [] and plan.add_associations == [] and plan.coordinators == []


def test_dry_run_changes_nothing(team_with_alice):
    gateway.remove_association("alice", TEAM)
    plan = sync_teams_to_slurm(dry_run=True)
    assert ("alice", TEAM) in plan.add_associations
    assert ("alice", TEAM) not in assocs()


def test_a_removed_member_loses_the_association(team_with_alice, bob):
    Membership.objects.create(user=bob, team=team_with_alice)
    sync_teams_to_slurm()
    assert ("bob", TEAM) in assocs()
    Membership.objects.filter(user=bob).delete()
    plan = sync_teams_to_slurm()
    assert ("bob", TEAM) in plan.remove_associations
    assert ("bob", TEAM) not in assocs()


def test_accounts_the_portal_does_not_manage_are_left_alone(team_with_alice):
    plan = plan_slurm_sync()
    assert not [a for _, a in plan.remove_associations if a in {"ops", "root"}]


def test_the_command_prints_its_plan(team_with_alice):
    gateway.remove_association("alice", TEAM)
    out = StringIO()
    call_command("sync_slurm_accounts", "--dry-run", stdout=out)
    assert f"would associate alice with {TEAM}" in out.getvalue()


def test_sacctmgr_sees_the_member_after_sync(team_with_alice):
    sync_teams_to_slurm()
    out = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"account={TEAM}", "format=user"],
                         capture_output=True, text=True, check=True).stdout
    assert "alice" in out.split()
