"""The Prolog's part of the checkpoint convention: root makes `<root>/<team>/<user>`, safely."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from slurm_plugins.checkpoint_env import prepare_user_level


@pytest.fixture
def root(tmp_path) -> Path:
    """A checkpoint root with team `vision` (root-only) and a health.conf naming it."""
    checkpoint_root = tmp_path / "ck"
    (checkpoint_root / "vision").mkdir(parents=True, mode=0o755)
    (tmp_path / "health.conf").write_text(f"[checkpoint]\nroot = {checkpoint_root}\n")
    return checkpoint_root


def prolog(root: Path, account: str = "vision", user: str = "alice") -> None:
    prepare_user_level({"PORTAL_HEALTH_CONF": str(root.parent / "health.conf"),
                        "SLURM_JOB_ACCOUNT": account, "SLURM_JOB_USER": user})


def test_it_makes_the_users_level_private_and_theirs(root):
    prolog(root)
    made = os.stat(root / "vision/alice", follow_symlinks=False)
    assert (made.st_uid, made.st_mode & 0o777) == (pwd.getpwnam("alice").pw_uid, 0o700)


def test_an_account_without_a_root_only_level_is_not_a_team(root):
    prolog(root, account="nlp")
    assert not (root / "nlp").exists()
    os.chmod(root / "vision", 0o777)  # noqa: S103 - anyone could swap entries in it
    prolog(root)
    assert not (root / "vision/alice").exists()
    prolog(root, account="..")
    assert not (root / "alice").exists() and not (root.parent / "alice").exists()


def test_it_never_follows_or_chowns_what_exists(root, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (root / "vision/alice").symlink_to(target)
    (root / "vision/bob").mkdir()  # root's, made by an admin: left alone
    prolog(root)
    prolog(root, user="bob")
    assert (root / "vision/alice").is_symlink()
    assert os.stat(target).st_uid == 0 and os.stat(root / "vision/bob").st_uid == 0
