"""The sensors' only Slurm action: drain this node, with the `portal:` reason prefix.

The prefix marks automatic drains; the portal's policy only ever resumes drains that carry
it. So a node an admin drained (any other reason) is left exactly as it is, never relabelled.
Commands are argument lists, never a shell. Slurm gives the health check no PATH, hence the
configured absolute path to scontrol.
"""

from __future__ import annotations

import os
import re
import subprocess

REASON_PREFIX = "portal: "
REASON_MAX = 250
_STATE_RE = re.compile(r"\bState=(\S+)")
_REASON_RE = re.compile(r"\bReason=(.*?)(?: \[[^\]]*\])?\s*$")
TIMEOUT_S = 5.0


def drain_reason(check: str, detail: str, more: int = 0) -> str:
    reason = f"{REASON_PREFIX}{check}: {detail}"
    suffix = f" (+{more} more)" if more else ""
    return reason[:REASON_MAX - len(suffix)] + suffix


def _scontrol(scontrol: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **{k: v for k, v in os.environ.items() if k == "SLURM_CONF"}}
    return subprocess.run([scontrol, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=env)


def node_state(scontrol: str, node: str) -> tuple[str, str] | None:
    """(State=..., Reason) as scontrol shows them, or None when slurmctld cannot say."""
    try:
        proc = _scontrol(scontrol, ["show", "node", "-o", node])
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = _STATE_RE.search(proc.stdout)
    if proc.returncode != 0 or not state:
        return None
    reason = _REASON_RE.search(proc.stdout)
    return state.group(1), reason.group(1) if reason else ""


def drain(scontrol: str, node: str, reason: str) -> str:
    """Drain unless already out of service. Returns what happened, for the sensor's log."""
    current = node_state(scontrol, node)
    if current is not None:
        state, old_reason = current
        out = "DRAIN" in state or state.split("+")[0] in {"DOWN", "FAIL"}
        if out and old_reason.startswith(REASON_PREFIX.strip()):
            return f"already drained ({old_reason})"
        if out:
            return f"left alone: an admin took it out ({state}: {old_reason or 'no reason'})"
    try:
        proc = _scontrol(scontrol, ["update", f"nodename={node}", "state=drain", f"reason={reason}"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"drain failed: {exc}"
    if proc.returncode != 0:
        return f"drain failed: {proc.stderr.strip() or proc.stdout.strip()}"
    return f"drained: {reason}"
