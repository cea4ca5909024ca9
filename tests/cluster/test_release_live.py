"""The whole local cluster on a Slurm release run from a Debian root (`./cluster/ctl up --slurm
24.11`): users' plain commands, a user's sbatch job and the health hooks, as people see them.

`make test-versions` starts such a cluster and runs this with a slice of the suite; on the host's
own release there is no root to check, and these tests say so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.test_ctl import CTL
from tests.conftest import ROOT, wait_until

sys.path.insert(0, str(ROOT / "cluster"))
import release  # a script of cluster/

RUNNING = release.saved(ROOT / "cluster/state")
pytestmark = [
    pytest.mark.skipif(RUNNING.root is None, reason=f"the local cluster runs the host's own Slurm "
                       f"{RUNNING.version}, not a release from a Debian root (./cluster/ctl up --slurm 24.11)"),
    pytest.mark.usefixtures("cluster", "slurm_accounts"),
]


def as_user(user: str, command: str, cwd: str = "/") -> subprocess.CompletedProcess:
    """A login shell of `user`, as a person at a terminal would type `command`."""
    return subprocess.run(["runuser", "-l", user, "-c", command], capture_output=True, text=True,
                          check=False, timeout=60, cwd=cwd)


def test_users_plain_commands_speak_the_roots_release():
    version = as_user("alice", "sinfo --version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split()[-1].startswith(RUNNING.version + ".")
    assert version.stdout.strip() != subprocess.run(["/usr/bin/sinfo", "--version"], capture_output=True,
                                                    text=True, check=False).stdout.strip()
    partitions = as_user("alice", "sinfo -h -o '%P %D'").stdout.split("\n")
    assert "gpu* 8" in partitions and "cpu 2" in partitions


def test_a_users_sbatch_from_home_runs_as_them_there_with_python_on_the_node():
    submitted = as_user("alice", "cd ~ && sbatch --parsable -A vision -p cpu -J release-live "
                        "--wrap 'id -un; pwd; python3 -c \"print(6 * 7)\"'")
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    out = Path(f"/home/alice/slurm-{job}.out")
    try:
        state = wait_until(lambda: (s := as_user("alice", f"sacct -n -X -P -j {job} -o State,User").stdout.strip())
                           and not s.startswith(("PENDING", "RUNNING")) and s, timeout=60, what=f"job {job} to end")
        assert state == "COMPLETED|alice"
        wait_until(out.exists, timeout=10, what=f"{out}")
        assert out.read_text().split() == ["alice", "/home/alice", "42"]
        assert out.stat().st_uid == Path("/home/alice").stat().st_uid
    finally:
        out.unlink(missing_ok=True)


def _node(node: str) -> tuple[str, str]:
    line = as_user("alice", f"sinfo -h -N -n {node} -o '%T|%E'").stdout.strip()
    state, _, reason = line.partition("|")
    return state, reason


def test_a_gpu_fault_is_drained_by_the_health_hook_running_in_the_root():
    node = "gpu08"
    subprocess.run([CTL, "fault", node, "--xid", "79"], check=True, capture_output=True)
    try:
        # No portal answers on 127.0.0.1:8000 here, so the hook drains the node itself (its own
        # scontrol, from the root) within its interval.
        _state, reason = wait_until(lambda: (s := _node(node))[0].startswith("drain") and s, timeout=45,
                                   what=f"{node} drained by its health hook")
        assert reason.startswith("portal: ")
    finally:
        subprocess.run([CTL, "heal", node], check=True, capture_output=True)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, check=False)
    wait_until(lambda: not _node(node)[0].startswith("drain"), timeout=30, what=f"{node} back in service")
