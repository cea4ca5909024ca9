"""./cluster/ctl fault|heal: faults the health sensors find, clear CLI errors, and --hang.

Only gpu07 and gpu08 are faulted, and every test heals (and resumes) what it broke: other
engineers' jobs share this cluster.
"""

from __future__ import annotations

import subprocess

import pytest

from slurm_plugins import report
from slurm_plugins.config import load
from tests.conftest import wait_until
from tests.slurm_plugins.helpers import (
    CLUSTER_STATE,
    check_only,
    closed_port_url,
    ctl,
    resume,
    slurm_node,
    write_config,
)


@pytest.fixture
def gpu07(cluster, tmp_path):
    """gpu07 healthy, and a sensor config with its own XID cursor over the cluster's emulated GPUs."""
    assert ctl("heal", "gpu07").returncode == 0
    conf = write_config(tmp_path, portal_url=closed_port_url(), emulated_dir=CLUSTER_STATE / "gpu")
    yield conf
    ctl("heal", "gpu07")
    resume("gpu07")     # the cluster's own health check may have drained it meanwhile


def findings(conf) -> set[tuple]:
    return {(f["check"], f["severity"], f["action"], f["gpu"], f["xid"]) for f in check_only("gpu07", conf)}


def test_an_xid_is_found_on_its_gpu(gpu07):
    assert ctl("fault", "gpu07", "--xid", "79", "--gpu", "2").returncode == 0
    # 79 is "fallen off the bus": the GPU is lost too, until healed (a reboot on real hardware).
    assert findings(gpu07) == {("xid", "fatal", "reboot", 2, 79), ("gpu-unreachable", "fatal", "reboot", 2, None)}


def test_an_application_xid_leaves_the_node_alone(gpu07):
    assert ctl("fault", "gpu07", "--xid", "13").returncode == 0
    assert findings(gpu07) == {("xid", "warning", "none", 0, 13)}


def test_ecc_errors_are_found(gpu07):
    assert ctl("fault", "gpu07", "--ecc", "--gpu", "1").returncode == 0
    assert findings(gpu07) == {("ecc", "fatal", "drain", 1, None), ("remapped-rows", "fatal", "reboot", 1, None)}


def test_a_hot_gpu_is_found(gpu07):
    assert ctl("fault", "gpu07", "--hot", "--gpu", "3").returncode == 0
    assert findings(gpu07) == {("temperature", "fatal", "drain", 3, None)}


def test_a_missing_gpu_is_found(gpu07):
    assert ctl("fault", "gpu07", "--gpu-missing").returncode == 0
    found = check_only("gpu07", gpu07)
    assert [(f["check"], f["severity"], f["action"]) for f in found] == [("gpu-count", "fatal", "drain")]
    assert found[0]["detail"] == "found 3 of 4 GPUs"


def test_heal_clears_every_fault(gpu07):
    for args in (["--xid", "48"], ["--ecc"], ["--hot"], ["--gpu-missing", "--gpu", "3"]):
        assert ctl("fault", "gpu07", *args).returncode == 0
    assert findings(gpu07)
    assert ctl("heal", "gpu07").returncode == 0
    assert findings(gpu07) == set()


@pytest.mark.parametrize(("args", "message"), [
    (["gpu99", "--xid", "79"], "invalid choice: 'gpu99'"),
    (["gpu07"], "one of the arguments --xid --ecc --hot --gpu-missing --hang is required"),
    (["gpu07", "--xid", "79", "--ecc"], "not allowed with argument"),
    (["gpu07", "--xid", "ten"], "invalid int value"),
    (["gpu07", "--xid", "79", "--gpu", "4"], "gpu07 has GPUs 0-3"),
    (["cpu01", "--ecc"], "cpu01 has no GPUs"),
    (["gpu07", "--hang", "--gpu", "1"], "--gpu does not apply to --hang"),
])
def test_bad_fault_commands_are_clear_cli_errors(args, message):
    proc = ctl("fault", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_heal_of_an_unknown_node_is_a_cli_error():
    proc = ctl("heal", "gpu42")
    assert proc.returncode == 2 and "invalid choice: 'gpu42'" in proc.stderr and "Traceback" not in proc.stderr


def _portal_answers() -> bool:
    """Whether the portal the cluster's sensors report to is up (then its policy drains, not they)."""
    config = load({"SLURMD_NODENAME": "gpu08"}, str(CLUSTER_STATE / "etc/health.conf"))
    outcome, _ = report.post(config.portal_url, "gpu08", report.Envelope({}), b"x", 0.5)
    return outcome != report.UNREACHABLE


@pytest.mark.slow
def test_the_clusters_own_health_check_drains_a_faulted_node_within_seconds(cluster):
    if _portal_answers():
        pytest.skip("the portal the cluster's sensors report to is up: draining is its policy's job")
    assert ctl("heal", "gpu08").returncode == 0
    resume("gpu08")
    try:
        assert ctl("fault", "gpu08", "--xid", "48", "--gpu", "1").returncode == 0
        def drained():
            state, reason = slurm_node("gpu08")
            return reason if "drain" in state else None

        reason = wait_until(drained, timeout=10, what="gpu08 to be drained by its health check")
        assert reason == "portal: xid: Xid 48 on GPU 1: double-bit ECC error"
    finally:
        ctl("heal", "gpu08")
        resume("gpu08")


@pytest.mark.slow
def test_hang_stops_the_nodes_slurmd_and_heal_brings_it_back(cluster):
    # Keep new jobs off gpu08 while its slurmd is dead (other engineers' tests share the cluster).
    ctl("heal", "gpu08")
    subprocess.run(["scontrol", "update", "nodename=gpu08", "state=drain", "reason=portal-test: hang"], check=True)
    try:
        proc = ctl("fault", "gpu08", "--hang")
        assert proc.returncode == 0, proc.stderr
        assert "slurmd-gpu08       stopped" in ctl("status").stdout
        proc = ctl("heal", "gpu08")
        assert proc.returncode == 0, proc.stderr
        assert "slurmd-gpu08       running" in ctl("status").stdout
        wait_until(lambda: "*" not in subprocess.run(["sinfo", "-h", "-N", "-n", "gpu08", "-o", "%T"],
                                                     capture_output=True, text=True, check=True).stdout,
                   timeout=30, what="gpu08 to answer slurmctld again")
    finally:
        ctl("heal", "gpu08")
        resume("gpu08")


def test_up_wires_the_health_sensors_into_the_cluster(cluster):
    """Hooks in slurm.conf, private keys, and emulated GPUs for the GPU nodes only."""
    conf = (CLUSTER_STATE / "etc/slurm.conf").read_text()
    for line in ("\nProlog=", "Epilog=", "TaskProlog=", "HealthCheckProgram=", "HealthCheckInterval=3",
                 "SchedulerParameters=nohold_on_prolog_fail"):
        assert line in conf
    keys = [CLUSTER_STATE / "etc/health-master.key", *(CLUSTER_STATE / "nodes" / n / "health.key"
                                                       for n in ("gpu01", "cpu01"))]
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key
    node_keys = {(CLUSTER_STATE / "nodes" / n / "health.key").read_text() for n in ("gpu01", "gpu02")}
    assert len(node_keys) == 2
    assert sorted(p.name for p in (CLUSTER_STATE / "gpu").glob("*.json")) == [f"gpu0{i}.json" for i in range(1, 9)]
    assert check_only("cpu01") == []     # the cluster's own config: no GPUs expected, none found
