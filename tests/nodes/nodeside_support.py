"""Helpers for the node-side tests of issue 9: sbatch jobs on gpu06-gpu08, what Slurm holds for
them, and a record of every call the health policy makes to move jobs off a node."""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from portal.nodes import evacuation
from tests.conftest import ROOT
from tests.slurm.helpers import home

CTL = str(ROOT / "cluster/ctl")
# Every GPU node but the ones this helper may break: a job confined to gpu06-gpu08.
OTHER_GPU_NODES = "gpu[01-05]"


def sbatch(*extra: str, wrap: str | None = None) -> tuple[int, str]:
    """A requeueable job of alice's (team vision); returns its id and a marker unique to its
    process, so a test can find the process (`pgrep -f marker`) after Slurm lost track of it."""
    marker = f"nodeside-{uuid.uuid4().hex[:10]}"
    script = wrap or f"exec python3 -c 'import time; time.sleep(600)' {marker}"
    out = subprocess.run(
        ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-A", "vision", "-J", marker, "-t", "10",
         "--requeue", "-o", f"{home('alice')}/portal-nodeside-%j.out", *extra, "--wrap", script],
        check=True, capture_output=True, text=True, cwd=home("alice"))
    return int(out.stdout.strip().split(";")[0]), marker


def job(job_id: int) -> dict[str, str]:
    """scontrol show job, as a dict of its key=value fields (JobState, NodeList, Restarts, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                         check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def running_on(job_id: int, node: str) -> bool:
    fields = job(job_id)
    return fields.get("JobState") == "RUNNING" and fields.get("NodeList") == node


def node_fields(node: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True,
                         check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S*)", out))
    reason = re.search(r"\bReason=(.*?)(?: \[[^\]]*\])?\s*$", out)
    fields["Reason"] = reason.group(1) if reason else ""
    return fields


def pids(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"time.sleep.600. {marker}$"], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def slurm_jobs():
    """Slurm job ids a test started; all cancelled afterwards (and their stray processes ended)."""
    started: list[tuple[int, str]] = []
    yield started
    if started:
        subprocess.run(["scancel", *(str(j) for j, _ in started)], check=False, capture_output=True)
        for _, marker in started:
            # The copy a hung node kept running: Slurm cannot reach it to end it (README, "Hung nodes").
            for pid in pids(marker):
                subprocess.run(["kill", str(pid)], check=False, capture_output=True)


@dataclass(frozen=True)
class Evacuation:
    node: str
    cause: str
    detail: str
    moved: tuple[int, ...]


@pytest.fixture
def evacuations(monkeypatch) -> list[Evacuation]:
    """Every call the node side makes to move jobs off a node, in order. The calls go through to
    the recovery app when it is merged (its evacuate_node then really requeues); before that the
    list is the evidence that the policy asked."""
    calls: list[Evacuation] = []
    real = evacuation.evacuate

    def recording(node_name: str, *, cause: str, detail: str) -> list[int]:
        moved = real(node_name, cause=cause, detail=detail)
        calls.append(Evacuation(node_name, str(cause), detail, tuple(moved)))
        return moved

    monkeypatch.setattr(evacuation, "evacuate", recording)
    return calls
