"""Team-quota fixtures: `qt-` teams of our own on the shared cluster, removed from Slurm after.

Read-backs go straight to sacctmgr (not through the gateway), so a gateway bug cannot hide
behind itself. The demo accounts (vision, nlp, ...) are never touched: the reconciler changes
only accounts of teams in the test database, which holds only these.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmRejected
from portal.teams.models import Membership, Team, TeamPolicy

CLUSTER = "portal"


def sacctmgr(*args: str) -> str:
    return subprocess.run(["sacctmgr", "-n", "-P", *args], capture_output=True, text=True, check=True).stdout


def sacctmgr_write(*args: str) -> None:
    subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True, check=True)


def account_row(account: str) -> dict[str, object] | None:
    """The account's own association as Slurm holds it: fairshare and GrpTRES (as a dict)."""
    for line in sacctmgr("show", "assoc", f"cluster={CLUSTER}", f"account={account}",
                         "format=account,user,fairshare,grptres").splitlines():
        name, user, fairshare, tres = line.split("|")
        if name == account and not user:
            pairs = (item.split("=") for item in tres.split(",") if item)
            return {"fairshare": fairshare, "grptres": dict(pairs)}
    return None


def users_of(account: str) -> set[str]:
    out = sacctmgr("show", "assoc", f"cluster={CLUSTER}", f"account={account}", "format=user")
    return {line for line in out.split() if line}


def coordinated_by(user: str) -> set[str]:
    """Accounts `user` coordinates, from `sacctmgr show user USER withcoord`."""
    out = sacctmgr("show", "user", user, "withcoord", "format=user,coordinators")
    accounts: set[str] = set()
    for line in out.splitlines():
        accounts |= {a for a in line.partition("|")[2].split(",") if a}
    return accounts


def default_account(user: str) -> str:
    return sacctmgr("show", "user", user, "format=defaultaccount").strip()


def account_exists(account: str) -> bool:
    return bool(sacctmgr("show", "account", account, "format=account").strip())


@pytest.fixture
def qt_names(cluster):
    """Names for `qt-` teams; every one is removed from Slurm at the end of the test."""
    names: list[str] = []
    yield names
    for name in names:
        _remove_account_after_its_jobs(name)


def _remove_account_after_its_jobs(name: str) -> None:
    """Slurm refuses to remove an account with active jobs ("Job(s) active, cancel job(s) before
    remove"), and a job a test cancelled may still be completing: 24.11 took longer than 22.05
    here. So cancel what is left and retry while Slurm says so, for up to 30 s."""
    subprocess.run(["scancel", "-A", name], check=False, capture_output=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            gateway.remove_account(name)
            return
        except SlurmRejected as err:
            if "Job(s) active" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def qt_team(qt_names, unique, alice, bob, db):
    """Team qt-<unique> with alice as lead and bob as member, not yet in Slurm."""
    name = f"qt-{unique}"
    qt_names.append(name)
    team = Team.objects.create(name=name)
    Membership.objects.create(user=alice, team=team, role=Membership.Role.LEAD)
    Membership.objects.create(user=bob, team=team)
    return team


@pytest.fixture
def capped(qt_team):
    """qt_team with a full policy: share 70, 4 GPUs overall, 6 h100 (the overall cap is the lower)."""
    TeamPolicy.objects.create(team=qt_team, shares=70, max_gpus=4, max_gpus_by_type={"h100": 6})
    return qt_team
