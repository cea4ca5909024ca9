"""Users' home directories, where their job output lands, are private."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster.ctl_module import load_ctl


def as_user(user: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *args], capture_output=True, text=True,
                          timeout=30, check=False, cwd="/")


@pytest.fixture
def alices_output():
    path = Path("/home/alice/h3-private-check.out")
    proc = as_user("alice", "sh", "-c", f"echo alice-only > {path}; chmod 644 {path}")
    assert proc.returncode == 0, proc.stderr
    yield path
    path.unlink(missing_ok=True)


def test_up_makes_homes_private_so_bob_cannot_read_alices_output(alices_output):
    # What `up` runs for every demo user; it also fixes homes made 0755 by earlier versions.
    load_ctl().secure_home("alice")
    assert Path("/home/alice").stat().st_mode & 0o777 == 0o700
    proc = as_user("bob", "cat", str(alices_output))
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    assert as_user("alice", "cat", str(alices_output)).stdout == "alice-only\n"


def test_securing_a_home_twice_changes_nothing(capsys):
    ctl = load_ctl()
    ctl.secure_home("bob")
    capsys.readouterr()
    ctl.secure_home("bob")
    assert capsys.readouterr().out == ""
    assert Path("/home/bob").stat().st_mode & 0o777 == 0o700


def test_a_home_the_user_does_not_own_is_left_alone(capsys):
    # nobody's home, /nonexistent, is not nobody's to make private (here it does not exist;
    # on some systems it is a shared directory).
    load_ctl().secure_home("nobody")
    assert capsys.readouterr().out == ""
