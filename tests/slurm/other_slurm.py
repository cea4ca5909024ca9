"""The mini cluster of another Slurm release (cluster/rootcluster.py) as the tests see it.

    python3 cluster/rootcluster.py start trixie && eval "$(python3 cluster/rootcluster.py env trixie)"

The gateway is pointed at its slurmrestd, JWT key, cluster name and, for its CLI half, at the
root's own commands. What Slurm holds is read back with the root's commands too: a 22.05 client
cannot talk to a 24.11 slurmctld.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from portal.slurm import gateway
from portal.slurm.transport import chroot_prefix

URL = os.environ.get("SLURM_V11_REST_URL", "")
ROOT = os.environ.get("SLURM_V11_ROOT", "")
KEY = os.environ.get("SLURM_V11_JWT_KEY", f"{ROOT}/etc/slurm/jwt.key")
CLUSTER = os.environ.get("SLURM_V11_CLUSTER", "v11test")

needs_other_slurm = pytest.mark.skipif(
    not URL, reason="SLURM_V11_REST_URL is not set: no mini cluster of another Slurm release to test against "
                    "(python3 cluster/rootcluster.py start; eval \"$(python3 cluster/rootcluster.py env)\")")


@pytest.fixture
def other_slurm(settings):
    """The gateway pointed at the mini cluster, asking for its REST version anew."""
    assert ROOT and Path(KEY).is_file(), "set SLURM_V11_ROOT (and SLURM_V11_JWT_KEY) with SLURM_V11_REST_URL"
    settings.SLURM = {**settings.SLURM, "REST_URL": URL, "JWT_KEY_FILE": KEY, "API_VERSION": "auto",
                      "CLI_ROOT": ROOT, "CLUSTER": CLUSTER}
    gateway.forget_negotiated_version()
    yield
    gateway.forget_negotiated_version()


def in_root(*args: str, user: str | None = None, check: bool = True) -> str:
    """A command of the root's own Slurm, as root or as `user` (ids from the root's passwd)."""
    proc = subprocess.run([*chroot_prefix(ROOT, user), *args], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed in {ROOT}: {proc.stderr.strip()}")
    return proc.stdout


def scontrol_job(job_id: int) -> dict[str, str]:
    out = in_root("scontrol", "show", "job", "-o", str(job_id))
    return {k: v for k, _, v in (item.partition("=") for item in out.split() if "=" in item)}


def node_state(node: str) -> tuple[str, str]:
    """sinfo's long state (e.g. "drained", "idle") and reason, as an admin of that cluster sees them."""
    out = in_root("sinfo", "-h", "-N", "-n", node, "-o", "%T|%E").strip().splitlines()[0]
    state, _, reason = out.partition("|")
    return state, reason
