"""Helpers for the recovery tests: real jobs on gpu03-gpu05 (this part's nodes), real cycles.

Jobs are pinned away from the nodes other helpers break (gpu01-02, gpu06-08) with ExcNodeList,
so a requeued job can only land on gpu03-gpu05. Every node a test breaks is healed and resumed
in teardown, whoever drained it. Jobs run as bob: other parts' tests and benchmarks submit as
alice, and an older alice job waiting for a dead node blocks the main scheduler for every
alice job behind it (fair share ranks bob's higher), which would make "restarts within seconds"
a wait for the next backfill pass instead.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from django.db.models import Q

from portal.jobs import tracking
from portal.jobs.models import Job
from portal.jobs.services import SubmitRequest, submit_job
from portal.nodes.services import sync_nodes
from portal.recovery import cycle
from portal.teams.models import Team
from tests.conftest import wait_until
from tests.slurm.helpers import home

ROOT = Path(__file__).resolve().parents[2]
OWN_NODES = ("gpu03", "gpu04", "gpu05")
OTHERS = "cpu[01-02],gpu[01-02,06-08]"
SLEEPER = "#!/bin/bash\necho started run $SLURM_RESTART_COUNT on $SLURMD_NODENAME\nsleep 240\n"


def scontrol_show(job_id: int) -> dict[str, str]:
    """`scontrol show job -o` as a dict (AdminComment may hold spaces; the rest do not here)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                         check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S*)", out))
    comment = re.search(r"AdminComment=(.*?)(?= \w+=|$)", out)
    fields["AdminComment"] = comment.group(1).strip() if comment else ""
    return fields


def sacct_runs(job_id: int) -> list[tuple[str, str]]:
    """(State, NodeList) of each run of the job, oldest first."""
    # -S: accounting keeps earlier clusters' jobs under the same ids (a checkout's cluster made anew).
    out = subprocess.run(["sacct", "-n", "-P", "-D", "-X", "-S", "now-30minutes", "-j", str(job_id), "-o",
                          "State,NodeList"],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def node_state(node: str) -> str:
    """sinfo's state of `node`. Asked again for up to 10 s when sinfo fails: it failed once in a
    CI run's fixture on the loaded 2-core machine, with slurmctld up throughout."""
    deadline = time.monotonic() + 10
    while True:
        proc = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True,
                              check=False)
        if proc.returncode == 0:
            return proc.stdout.strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"sinfo for {node} failed for 10 s: {proc.stderr.strip()}")
        time.sleep(0.5)


def heal_and_resume(*nodes: str) -> None:
    for node in nodes:
        subprocess.run([str(ROOT / "cluster/ctl"), "heal", node], capture_output=True, check=False)
    # The sensor may drain a healed node once more from a report it was still sending.
    time.sleep(1)
    for node in nodes:
        state = node_state(node)
        if state.startswith(("drain", "down", "fail")) or "*" in state:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True,
                           check=False)


def sbatch(user: str, name: str, *extra: str, wrap: str = "echo run $SLURM_RESTART_COUNT on $SLURMD_NODENAME; "
           "sleep 240") -> int:
    out = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "-A", "vision", "-J", name, "-t", "10", "--requeue",
         "-x", OTHERS, "-o", f"{home(user)}/portal-rq-%j.out", *extra, "--wrap", wrap],
        check=True, capture_output=True, text=True, cwd=home(user))
    return int(out.stdout.strip().split(";")[0])


def portal_job(user, name: str, script: str = SLEEPER, *, node: str | None = None, **extra) -> Job:
    """A portal job, submitted held, pinned to our nodes (and to `node`), then released."""
    spec = SubmitRequest(team=Team.objects.get(name="vision"), name=name, script=script, time_limit_min=10,
                         gpus_per_node=extra.pop("gpus_per_node", 1), hold=True, **extra)
    job = submit_job(user=user, spec=spec).job
    args = ["scontrol", "update", f"jobid={job.slurm_job_id}", f"ExcNodeList={OTHERS}"]
    if node:
        args.append(f"ReqNodeList={node}")
    subprocess.run(args, check=True, capture_output=True)
    subprocess.run(["scontrol", "release", str(job.slurm_job_id)], check=True, capture_output=True)
    return job


# The recovery cycle acts in Slurm on every job it tracks: on a shared cluster, only on ours.
MINE = Q(name__startswith="rq-")


def recover() -> cycle.RecoverResult:
    return cycle.recover_jobs(only=MINE)


def cycles_until(predicate, *, what: str, timeout: float = 60):
    """Tracker and recovery cycles, as beat runs them, until `predicate()` holds."""
    def step():
        tracking.track_jobs()
        recover()
        return predicate()
    return wait_until(step, timeout=timeout, interval=0.3, what=what)


def running_on(slurm_id: int, *, restarts: int):
    """The node list once Slurm runs the job's run number `restarts`, else None."""
    info = scontrol_show(slurm_id)
    if info.get("JobState") == "RUNNING" and info.get("Restarts") == str(restarts):
        return info.get("NodeList")
    return None


def row(slurm_id: int) -> Job | None:
    return Job.objects.filter(slurm_job_id=slurm_id).order_by("-id").first()


@pytest.fixture
def vision(alice, bob):
    from portal.teams.models import Membership  # noqa: PLC0415

    team = Team.objects.create(name="vision")
    Membership.objects.create(user=alice, team=team)
    Membership.objects.create(user=bob, team=team)
    return team


@pytest.fixture
def fresh_cycles():
    tracking.reset_tracker()
    cycle.reset_recovery()
    yield
    tracking.reset_tracker()
    cycle.reset_recovery()


@pytest.fixture
def slurm_jobs():
    ids: list[int] = []
    yield ids
    # A job cancelled while its requeue is still completing can come back: cancel until it is gone.
    for _ in range(10):
        left = [i for i in ids if scontrol_show_state(i) not in ("", "CANCELLED", "COMPLETED", "FAILED")]
        if not left:
            return
        subprocess.run(["scancel", *map(str, left)], check=False, capture_output=True)
        time.sleep(1)


def scontrol_show_state(job_id: int) -> str:
    proc = subprocess.run(["squeue", "-h", "-j", str(job_id), "-t", "all", "-o", "%T"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip()


@pytest.fixture
def own_nodes(cluster):
    """gpu03-gpu05 healthy and in service before and after the test."""
    for node in OWN_NODES:
        if node_state(node).startswith(("drain", "down")):
            heal_and_resume(node)
    yield OWN_NODES
    heal_and_resume(*OWN_NODES)
    sync_nodes()
