"""The NVML backend judged on NVML-shaped answers (recorded_nvml.py stands in for the GPUs)."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from slurm_plugins.config import load
from slurm_plugins.gpu import NoGpuBackend, open_backend
from slurm_plugins.kmsg import pci_key
from slurm_plugins.nvml import NvmlBackend
from slurm_plugins.sensor import SensorState, collect
from tests.slurm_plugins.recorded_nvml import Fail, RecordedNvml, h100, v100

# Kernel log records as the driver writes them (pri,seq,usec,flags;message).
XID_79_GPU2 = "3,5120,81234567,-;NVRM: Xid (PCI:0000:38:00): 79, pid=0, GPU has fallen off the bus."
XID_13_GPU0 = ("4,5121,81234999,-;NVRM: Xid (PCI:0000:18:00): 13, pid=43122, name=python, "
               "Graphics SM Warp Exception on (GPC 1, TPC 0, SM 0)")
UNRELATED = "6,5122,81235000,-;usb 1-1: new high-speed USB device number 2 using xhci_hcd"


class Node:
    """One NVML node under test: a config, the recorded GPUs, a kernel log file and the sensor's state."""

    def __init__(self, tmp: Path, gpus: list[dict], *, count: int | None = None, expected: int = 8,
                 extra: str = "") -> None:
        conf = tmp / "health.conf"
        conf.write_text(f"[sensor]\nstate_dir = {tmp}/state\nkill_stray = false\n"
                        f"[expected_gpus]\ndefault = {expected}\n{extra}")
        self.config = load({"SLURMD_NODENAME": "gpu01"}, str(conf))
        self.kmsg = tmp / "kmsg"
        self.kmsg.write_text("")
        self.nvml = RecordedNvml(gpus, count=count)
        self.state = SensorState(str(tmp / "state.json"))

    def findings(self, source: str = "healthcheck", environ: dict | None = None) -> list[tuple]:
        backend = NvmlBackend(self.nvml, kmsg_path=str(self.kmsg))
        try:
            found = collect(self.config, backend, source, environ=environ or {}, state=self.state, job_id=7)
        finally:
            backend.close()
        return [(f.check, f.severity, f.action, f.gpu) for f in found]


def eight(**changes_by_index) -> list[dict]:
    gpus = [h100(i) for i in range(8)]
    for key, change in changes_by_index.items():
        change(gpus[int(key[1:])])
    return gpus


def test_a_healthy_h100_node_has_no_findings(tmp_path):
    """No page retirement on an H100 (NVML: not supported) is not mistaken for a fault."""
    node = Node(tmp_path, eight())
    assert node.findings() == []
    assert node.nvml.shutdown_called


def test_uncorrected_ecc_errors_drain(tmp_path):
    node = Node(tmp_path, eight(g3=lambda g: g["ecc"].update(uncorrected=2)))
    assert node.findings() == [("ecc", "fatal", "drain", 3)]


def test_many_corrected_ecc_errors_only_warn(tmp_path):
    node = Node(tmp_path, eight(g1=lambda g: g["ecc"].update(corrected=5000)))
    assert node.findings() == [("ecc", "warning", "none", 1)]


def test_a_pending_row_remap_needs_a_reset_and_a_failed_one_a_new_gpu(tmp_path):
    node = Node(tmp_path, eight(g2=lambda g: g.update(remapped_rows=(0, 1, 1, 0)),
                                g5=lambda g: g.update(remapped_rows=(3, 9, 0, 1))))
    assert node.findings() == [("remapped-rows", "fatal", "reboot", 2), ("remapped-rows", "fatal", "drain", 5)]


def test_retired_pages_pending_or_too_many_on_a_v100(tmp_path):
    gpus = [v100(i) for i in range(4)]
    gpus[0]["retired_pending"] = pynvml.NVML_FEATURE_ENABLED
    gpus[1]["retired_pages"] = {"sbe": 40, "dbe": 24}
    node = Node(tmp_path, gpus, expected=4)
    assert node.findings() == [("retired-pages", "fatal", "reboot", 0), ("retired-pages", "fatal", "drain", 1)]


def test_temperature_warns_then_drains(tmp_path):
    node = Node(tmp_path, eight(g0=lambda g: g.update(temperature=87), g6=lambda g: g.update(temperature=95)))
    assert node.findings() == [("temperature", "warning", "none", 0), ("temperature", "fatal", "drain", 6)]


def test_power_over_the_enforced_limit_warns(tmp_path):
    node = Node(tmp_path, eight(g4=lambda g: g.update(power_mw=760_000)))
    assert node.findings() == [("power", "warning", "none", 4)]


def test_a_dead_nvlink_drains_but_a_gpu_without_nvlink_is_fine(tmp_path):
    def one_link_down(gpu):
        gpu["nvlink_state"][5] = pynvml.NVML_FEATURE_DISABLED

    def pcie_card(gpu):
        gpu["nvlink_state"] = Fail(pynvml.NVML_ERROR_NOT_SUPPORTED)

    node = Node(tmp_path, eight(g1=one_link_down, g7=pcie_card))
    assert node.findings() == [("nvlink", "fatal", "drain", 1)]


def test_nvlink_crc_and_replay_errors_over_the_threshold_warn(tmp_path):
    def noisy(gpu):
        gpu["nvlink_errors"][3].update(crc_flit=900, crc_data=300)
        gpu["nvlink_errors"][4].update(replay=2000)

    node = Node(tmp_path, eight(g2=noisy))
    assert node.findings() == [("nvlink", "warning", "none", 2), ("nvlink", "warning", "none", 2)]


def test_a_missing_gpu_drains(tmp_path):
    node = Node(tmp_path, eight()[:7])
    assert node.findings() == [("gpu-count", "fatal", "drain", None)]


def test_a_lost_gpu_needs_a_reboot_and_an_erroring_one_drains(tmp_path):
    gpus = eight()
    gpus[2] = Fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    gpus[6]["uuid"] = Fail(pynvml.NVML_ERROR_UNKNOWN)
    node = Node(tmp_path, gpus)
    assert node.findings() == [("gpu-unreachable", "fatal", "reboot", 2), ("gpu-unreachable", "fatal", "drain", 6)]


def test_xids_come_from_the_kernel_log_once_each_mapped_to_their_gpu(tmp_path):
    node = Node(tmp_path, eight())
    node.kmsg.write_text("\n".join([XID_79_GPU2, XID_13_GPU0, UNRELATED]) + "\n")
    assert node.findings() == [("xid", "fatal", "reboot", 2), ("xid", "warning", "none", 0)]
    assert node.findings() == []        # the cursor remembers what was reported
    node.kmsg.write_text(node.kmsg.read_text() + XID_13_GPU0.replace("5121", "5200") + "\n")
    assert node.findings() == [("xid", "warning", "none", 0)]


def test_processes_left_on_the_jobs_gpus_drain_after_the_job(tmp_path):
    """With kill_stray off, a process NVML still lists on the job's GPU keeps the node out."""
    node = Node(tmp_path, eight(g1=lambda g: g.update(processes=[424242]), g5=lambda g: g.update(processes=[515151])))
    assert node.findings("epilog", {"SLURM_JOB_GPUS": "0,1"}) == [("stray-process", "fatal", "drain", 1)]
    assert node.findings("healthcheck", {"SLURM_JOB_GPUS": "0,1"}) == []


def test_without_a_driver_an_nvml_node_reports_its_gpus_missing(tmp_path):
    """This machine has no NVIDIA driver: the real pynvml fails to initialise, and a node
    that should have GPUs says why it sees none."""
    conf = tmp_path / "health.conf"
    conf.write_text(f"[sensor]\nstate_dir = {tmp_path}\n[gpu]\nbackend = nvml\n[expected_gpus]\ndefault = 4\n")
    config = load({"SLURMD_NODENAME": "gpu01"}, str(conf))
    backend = open_backend(config)
    assert isinstance(backend, NoGpuBackend)
    found = collect(config, backend, "healthcheck", environ={}, state=SensorState(str(tmp_path / "s.json")),
                    job_id=None)
    assert [(f.check, f.severity, f.action) for f in found] == [("gpu-count", "fatal", "drain")]
    assert "found 0 of 4 GPUs (NVML: NVML Shared Library Not Found)" in found[0].detail


@pytest.mark.parametrize("bus_id", [b"00000000:38:00.0", "00000000:38:00.0"])
def test_pci_ids_from_nvml_match_the_kernels(bus_id):
    assert pci_key(bus_id) == pci_key("0000:38:00")
