"""run_cli(user=...) (how requeue runs scontrol with a user's JWT) keeps nothing of root's:
not gid 0, not root's supplementary groups, not the portal's environment (its secrets)."""

from __future__ import annotations

import pwd

import pytest

from portal.slurm.errors import SlurmUnavailable
from portal.slurm.transport import run_cli

NOBODY = pwd.getpwnam("nobody")


def test_the_command_runs_as_nobody_with_nobodys_group_only():
    assert run_cli(["id", "-u"], timeout=10, user="nobody").strip() == str(NOBODY.pw_uid)
    assert run_cli(["id", "-g"], timeout=10, user="nobody").strip() == str(NOBODY.pw_gid)
    groups = run_cli(["id", "-G"], timeout=10, user="nobody").split()
    assert groups == [str(NOBODY.pw_gid)] and "0" not in groups


def test_the_command_gets_a_minimal_environment(monkeypatch):
    monkeypatch.setenv("PORTAL_DB_PASSWORD", "not-for-jobs")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "portal.settings")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    lines = run_cli(["env"], timeout=10, user="nobody", env={"SLURM_JWT": "the-users-token"}).splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["SLURM_JWT"] == "the-users-token" and env["LANG"] == "C"
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf" and env["PATH"]
    assert set(env) <= {"PATH", "LANG", "SLURM_JWT", "SLURM_CONF"}, sorted(env)
    assert "not-for-jobs" not in "\n".join(lines)


def test_without_a_user_the_portals_own_environment_is_kept(monkeypatch):
    # Operator calls (sacctmgr, scontrol as the portal) run as the portal itself, on purpose.
    monkeypatch.setenv("PORTAL_PROBE", "kept")
    assert "PORTAL_PROBE=kept" in run_cli(["env"], timeout=10)


def test_a_cli_root_that_is_not_there_is_a_clear_unavailable(tmp_path):
    missing = tmp_path / "no-root"
    with pytest.raises(SlurmUnavailable, match=rf"cannot run scontrol in {missing}"):
        run_cli(["scontrol", "ping"], timeout=10, root=str(missing))


def test_a_user_the_cli_root_does_not_know_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    with pytest.raises(SlurmUnavailable, match=r"no user 'nobody' in .*/etc/passwd"):
        run_cli(["scontrol", "requeue", "1"], timeout=10, user="nobody", root=str(tmp_path))
