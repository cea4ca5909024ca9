"""The gateway's contract against a live Slurm of another release (v0.0.40+ REST API).

Runs against the mini cluster of cluster/rootcluster.py (Slurm 24.11 from a Debian trixie root,
or 26.05 from sid), never against the host's cluster:

    python3 cluster/rootcluster.py start && eval "$(python3 cluster/rootcluster.py env)"

The gateway negotiates the version itself; what Slurm holds is read back with the root's own
scontrol (a 22.05 client cannot talk to a 24.11 slurmctld).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from portal.slurm import gateway, rest_versions
from portal.slurm.errors import SlurmRejected
from portal.slurm.transport import run_cli
from portal.slurm.types import JobSpec
from tests.conftest import wait_until
from tests.slurm.other_slurm import CLUSTER, ROOT, needs_other_slurm, other_slurm, scontrol_job  # noqa: F401

pytestmark = [needs_other_slurm, pytest.mark.usefixtures("other_slurm")]


def spec(tag: str, **extra) -> JobSpec:
    fields = {"name": f"live-{tag}", "account": "vision", "working_dir": "/tmp", "time_limit_min": 5,
              "comment": f"live-{tag}", "stdout": f"/tmp/live-{tag}-%j.out",
              "script": "#!/bin/bash\nid -un\necho \"V11=$V11\"\nsleep 120\n", "environment": {"V11": tag},
              **extra}
    return JobSpec(**fields)


def test_it_negotiates_a_version_newer_than_22_05():
    api = gateway.rest_api()
    assert api.version in rest_versions.SUPPORTED and api.version != "v0.0.38"
    assert gateway.ping() < 5


def test_a_job_submitted_through_the_gateway_runs_as_alice_as_asked_and_cancels():
    tag = uuid.uuid4().hex[:8]
    job_id = gateway.submit_job("alice", spec(tag, gpus_per_node=1, gpu_type="h100", mem_mb=512, cpus_per_task=2))
    try:
        held = scontrol_job(job_id)
        assert held["UserId"].startswith("alice(") and held["Comment"] == f"live-{tag}"
        assert (held["TresPerNode"], held["TimeLimit"], held["MinMemoryNode"], held["CPUs/Task"]) == \
            ("gres/gpu:h100:1", "00:05:00", "512M", "2")
        wait_until(lambda: gateway.get_job(job_id).state == "RUNNING", timeout=30, what=f"job {job_id} to run")
        out = Path(ROOT) / f"tmp/live-{tag}-{job_id}.out"
        wait_until(lambda: out.is_file() and "V11=" in out.read_text(), timeout=15, what=f"{out}")
        assert out.read_text().splitlines()[:2] == ["alice", f"V11={tag}"]
        job, running = gateway.get_job(job_id), scontrol_job(job_id)
        assert (job.user, job.account, job.comment) == ("alice", "vision", f"live-{tag}")
        assert job.nodes == running["NodeList"]
        assert (job.stdout, job.time_limit_min) == (str(out).removeprefix(ROOT), 5)
        detail = gateway.job_detail(job_id)
        assert (detail.state, detail.nodes, detail.requeue) == ("RUNNING", running["NodeList"], True)
    finally:
        gateway.cancel_job("alice", job_id)
    wait_until(lambda: scontrol_job(job_id)["JobState"] == "CANCELLED", timeout=30, what="the cancel")
    gateway.cancel_job("alice", job_id)  # a job that already ended: a no-op
    assert gateway.get_job(job_id).state == "CANCELLED"


def test_bob_cannot_cancel_alices_job_and_slurm_keeps_answering():
    # Over REST this refusal once left 24.11's and 26.05's slurmctld unable to answer job reads;
    # the gateway cancels through that release's scancel with the user's JWT instead.
    job_id = gateway.submit_job("alice", spec(uuid.uuid4().hex[:8], hold=True))
    try:
        with pytest.raises(SlurmRejected, match=r"[Pp]ermission denied"):
            gateway.cancel_job("bob", job_id)
        assert scontrol_job(job_id)["JobState"] == "PENDING"
        assert gateway.get_job(job_id).state == "PENDING"  # REST job reads still answer
    finally:
        gateway.cancel_job("alice", job_id)
    wait_until(lambda: scontrol_job(job_id)["JobState"] == "CANCELLED", timeout=30, what="alice's own cancel")


def test_the_cli_half_runs_in_the_root_as_the_roots_own_users():
    nobody = next(line.split(":") for line in Path(ROOT, "etc/passwd").read_text().splitlines()
                  if line.startswith("nobody:"))
    assert run_cli(["id", "-u"], timeout=10, user="nobody", root=ROOT).strip() == nobody[2]
    # The root's own scontrol, reading the root's slurm.conf: this release, this cluster.
    out = gateway.cli(["scontrol", "show", "config"])
    assert f"ClusterName             = {CLUSTER}" in out
    version = Path(ROOT, ".v11-root-finished").read_text().split()[-1]
    assert f"SLURM_VERSION           = {version}" in out


def test_hold_and_release_as_the_user():
    tag = uuid.uuid4().hex[:8]
    job_id = gateway.submit_job("alice", spec(tag, hold=True, nodes=2, requeue=False))
    try:
        held = scontrol_job(job_id)
        assert (held["JobState"], held["Reason"], held["NumNodes"], held["Requeue"]) == \
            ("PENDING", "JobHeldUser", "2-2", "0")
        assert gateway.job_detail(job_id).reason == "JobHeldUser"
        gateway.release_job("alice", job_id)
        assert scontrol_job(job_id)["Reason"] != "JobHeldUser"
        gateway.hold_job("alice", job_id)
        assert scontrol_job(job_id)["Reason"] == "JobHeldUser"
    finally:
        gateway.cancel_job("alice", job_id)


def test_nodes_partitions_and_the_change_probe():
    nodes = {n.name: n for n in gateway.list_nodes()}
    assert set(nodes) == {"gpu01", "gpu02"}
    assert all(n.gres == "gpu:h100:4" and n.cpus == 8 for n in nodes.values())
    assert gateway.slurmd_address("gpu01") == ("127.0.0.1", 7818)
    parts = {p.name: p for p in gateway.list_partitions()}
    assert [(p.name, p.nodes, p.state, p.max_time_min) for p in parts.values()] == \
        [("debug", "gpu[01-02]", "UP", 60), ("gpu", "gpu[01-02]", "UP", 2880)]
    # v0.0.40+ does not flag the default partition; the reader asks scontrol, listed first here.
    assert {name: p.is_default for name, p in parts.items()} == {"debug": False, "gpu": True}
    assert gateway.jobs_changed_since(0) is True
    if gateway.rest_api().version in ("v0.0.40", "v0.0.41"):
        assert gateway.jobs_changed_since(int(time.time())) is True  # no working probe on 24.11
        return
    # Cancelled jobs of the tests before may still be completing (KillWait): wait for quiet.
    wait_until(lambda: gateway.jobs_changed_since(int(time.time()) - 1) is False, timeout=30,
               what="a probe that finds nothing changed")
