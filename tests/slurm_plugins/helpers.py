"""Running the real hook scripts against the live cluster, with a private config per test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from slurm_plugins import emulated
from tests.conftest import ROOT

PLUGINS = ROOT / "slurm_plugins"
CTL = str(ROOT / "cluster/ctl")
CLUSTER_STATE = ROOT / "cluster/state"
sys.path.insert(0, str(ROOT / "cluster"))
import release  # noqa: E402 - a script of cluster/: which Slurm release the local cluster runs


def closed_port_url() -> str:
    """A local URL where nothing listens: connections are refused at once, as when the portal is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def node_key_file(node: str) -> Path:
    """The key ./cluster/ctl up derived for the node from the portal's master key."""
    return CLUSTER_STATE / "nodes" / node / "health.key"


def write_config(tmp: Path, *, portal_url: str, emulated_dir: Path | None = None, key_file: Path | None = None,
                 sensor: str = "", extra: str = "") -> Path:
    """health.conf for one test: its own spool/state dir, and (by default) its own emulated GPUs,
    so the cluster's own health checks never see the test's faults."""
    key = key_file or node_key_file("%n")
    gpu_dir = emulated_dir or tmp / "gpu"
    gpu_dir.mkdir(parents=True, exist_ok=True)
    path = tmp / "health.conf"
    path.write_text(f"""
[portal]
url = {portal_url}
timeout = 3
key_file = {key}
[sensor]
state_dir = {tmp}/nodes/%n
{sensor}
[gpu]
backend = auto
emulated_state_dir = {gpu_dir}
[expected_gpus]
default = 0
gpu* = 4
{extra}
""")
    return path


def healthy_gpus(gpu_dir: Path, node: str) -> None:
    gpu_dir.mkdir(parents=True, exist_ok=True)
    emulated.write_state(str(gpu_dir), node, emulated.healthy_state(node, 4))


def break_gpus(gpu_dir: Path, node: str, change) -> None:
    emulated.update_state(str(gpu_dir), node, 4, change)


def run_hook(hook: str, node: str, conf: Path | None, *args: str, env: dict | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess:
    """Run slurm_plugins/<hook> as slurmd would: root, a bare environment, SLURMD_NODENAME set,
    and on the node's own system: inside the Debian root when the local cluster runs from one
    (its scontrol is the daemons' release; the root sees the checkout and /tmp at their paths)."""
    environ = {"SLURMD_NODENAME": node, **({"PORTAL_HEALTH_CONF": str(conf)} if conf else {}), **(env or {})}
    command = release.saved(CLUSTER_STATE).cmd([str(PLUGINS / hook), *args])
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=timeout, check=False)


def check_only(node: str, conf: Path | None = None) -> list[dict]:
    proc = run_hook("healthcheck", node, conf, "--check-only")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def spool_files(tmp: Path, node: str) -> list[Path]:
    spool = tmp / "nodes" / node / "spool"
    return sorted(spool.glob("*.json")) if spool.exists() else []


def slurm_node(node: str) -> tuple[str, str]:
    """(state, reason) as sinfo shows them, e.g. ("drained", "portal: xid: ...")."""
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"], capture_output=True, text=True,
                         check=True).stdout.strip()
    state, _, reason = out.partition("|")
    return state.rstrip("*~#"), reason


def resume(node: str) -> None:
    """Return a node the test drained to service (idempotent)."""
    state, _ = slurm_node(node)
    if "drain" in state or state in {"down", "fail"}:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False,
                       capture_output=True)


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CTL, *args], capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ})
