"""gateway.fair_share against the live cluster: an account of our own, read back as sshare prints it."""

from __future__ import annotations

import subprocess

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmRejected
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.fixture
def account(unique):
    name = f"qt-fs-{unique}"
    gateway.ensure_account(name)
    for user in ("alice", "bob"):
        gateway.ensure_association(user, name)
    gateway.set_account_limits(name, fairshare=7)
    yield name
    gateway.remove_account(name)


def sshare_direct(account: str) -> list[list[str]]:
    out = subprocess.run(["sshare", "-n", "-P", "-a", "-A", account, "-o", "Account,User,RawShares,NormShares"],
                         capture_output=True, text=True, check=True).stdout
    return [[part.strip() for part in line.split("|")] for line in out.splitlines()]


def test_it_reads_the_accounts_share_and_each_users_factor(account):
    def read() -> dict | None:
        rows = {r.user: r for r in gateway.fair_share([account])}
        return rows if "" in rows and rows[""].raw_shares == 7 and len(rows) == 3 else None

    by_user = wait_until(read, timeout=15, what="slurmctld to hold the new account, its share and users")
    assert set(by_user) == {"", "alice", "bob"}
    own = by_user[""]
    assert own.account == account and own.raw_shares == 7 and own.fair_share is None
    for user in ("alice", "bob"):
        assert by_user[user].norm_shares == pytest.approx(0.5)
        assert 0 <= by_user[user].fair_share <= 1
    # The same figures sshare itself prints.
    direct = {(a, u): (s, n) for a, u, s, n in sshare_direct(account)}
    assert direct[account, ""] == ("7", f"{own.norm_shares:.6f}")


def test_unknown_accounts_are_absent_and_bad_names_never_reach_slurm(account):
    assert gateway.fair_share(["qt-nosuch-account"]) == []
    assert gateway.fair_share([]) == []
    with pytest.raises(SlurmRejected):
        gateway.fair_share(["vision,nlp -a"])
    everyone = {r.account for r in gateway.fair_share()}
    assert account in everyone and "root" not in everyone
