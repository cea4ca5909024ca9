"""./cluster/ctl: status, idempotent up, and plain Slurm commands from any shell."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT

CTL = str(ROOT / "cluster/ctl")


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CTL, *args], capture_output=True, text=True, check=False, timeout=180)


def daemon_pids() -> dict[str, str]:
    pids = {}
    for line in ctl("status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "running," and parts[2] == "pid":
            pids[parts[0]] = parts[3]
    return pids


def test_status_lists_every_daemon_running(cluster):
    pids = daemon_pids()
    expected = {"slurmdbd", "slurmctld", "slurmrestd"} | {f"slurmd-gpu0{i}" for i in range(1, 9)}
    assert expected | {"slurmd-cpu01", "slurmd-cpu02"} <= set(pids)


def test_up_twice_is_harmless(cluster):
    before = daemon_pids()
    proc = ctl("up")
    assert proc.returncode == 0, proc.stderr
    assert daemon_pids() == before   # nothing restarted


def test_plain_slurm_commands_work_from_a_shell(cluster):
    out = subprocess.run(["sinfo", "-h", "-o", "%P %D"], capture_output=True, text=True, check=True).stdout
    assert "gpu* 8" in out and "cpu 2" in out
    out = subprocess.run(["bash", "-lc", "sacctmgr -n -P show cluster format=cluster"],
                         capture_output=True, text=True, check=True).stdout
    assert "portal" in out.split()


def test_unknown_command_is_a_clear_cli_error():
    proc = ctl("explode")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr
