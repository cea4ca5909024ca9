"""Helpers for the health policy tests: signed reports through the real intake, Slurm's view of a node."""

from __future__ import annotations

import subprocess
import time

import pytest

from portal.nodes.services import AUTO_PREFIX, sync_nodes
from portal.slurm import gateway
from slurm_plugins.findings import xid_finding
from slurm_plugins.report import Envelope
from tests.slurm_plugins.signed_reports import body, send

# The only nodes these tests may drain in the shared cluster (besides what the cap must stop).
OWN_NODES = ("gpu06", "gpu07", "gpu08")


def xid(number: int, gpu: int = 0) -> dict:
    """A finding exactly as the sensor classifies the XID."""
    return xid_finding(number, gpu=gpu).as_dict()


def report(node: str, *findings: dict, at: float | None = None) -> None:
    """One signed health-check report for `node` through the portal's intake (which enqueues the policy)."""
    resp = send(Envelope(body(node, findings=list(findings), sent_at=at or time.time())), node)
    assert resp.status_code == 202, resp.content


def slurm_state(node: str) -> tuple[str, str]:
    """(sinfo's long state, e.g. "drained" or "idle", and the reason) as an admin would see them."""
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[0]
    state, _, reason = out.partition("|")
    return state, reason


def drained(node: str) -> bool:
    state, _ = slurm_state(node)
    return state.startswith("drain")


def restore(*nodes: str) -> None:
    """Return nodes a test drained to service, whoever drained them, and resync the table."""
    for name in nodes:
        if drained(name):
            gateway.resume_node(name)
    sync_nodes()


@pytest.fixture
def own_nodes(cluster):
    """gpu06-gpu08 in service before and after the test; the node table synced from Slurm."""
    for name in OWN_NODES:
        state, reason = slurm_state(name)
        if state.startswith("drain") and not reason.startswith(AUTO_PREFIX) and "test" not in reason:
            pytest.skip(f"{name} is drained by someone else ({reason}); not touching it")
    restore(*OWN_NODES)
    yield OWN_NODES
    restore(*OWN_NODES)
