"""Emulated GPUs for the local cluster, which has none.

Each node's GPUs live in <state_dir>/<node>.json, shaped after what NVML reports. The sensors
read it through EmulatedBackend; `./cluster/ctl fault|heal` change it with the functions at
the bottom (ctl imports this module: it is standard library only). Writes are atomic (a
temporary file renamed over the old one), so a sensor never reads half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator

from slurm_plugins.gpu import Backend, GpuSample, LinkSample, XidEvent

NVLINKS = 18            # an H100 SXM has 18 NVLink 4 links
MAX_EVENTS = 1000       # keep the file small when someone injects XIDs in a loop
IDLE_TEMPERATURE_C = 34
HOT_TEMPERATURE_C = 97  # above the default critical limit (92 °C)
POWER_LIMIT_W = 700.0


# ---------------------------------------------------------------- the state file

def state_path(state_dir: str, node: str) -> str:
    return os.path.join(state_dir, f"{node}.json")


def healthy_gpu(node: str, index: int) -> dict:
    return {
        "index": index, "uuid": f"GPU-emulated-{node}-{index}", "present": True, "lost": False,
        "temperature_c": IDLE_TEMPERATURE_C, "power_w": 71.0, "power_limit_w": POWER_LIMIT_W,
        "ecc": {"volatile_uncorrected": 0, "volatile_corrected": 0},
        "retired_pages": {"count": 0, "pending": False},
        "remapped_rows": {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False},
        "nvlink": [{"active": True, "replay": 0, "recovery": 0, "crc": 0} for _ in range(NVLINKS)],
        "processes": [],
    }


def healthy_state(node: str, gpus: int) -> dict:
    # A fresh epoch tells sensors that XID sequence numbers started again (like a reboot).
    return {"node": node, "epoch": os.urandom(8).hex(), "next_seq": 1,
            "gpus": [healthy_gpu(node, i) for i in range(gpus)], "xid_events": []}


def read_state(state_dir: str, node: str) -> dict | None:
    try:
        with open(state_path(state_dir, node), encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def write_state(state_dir: str, node: str, state: dict) -> None:
    path = state_path(state_dir, node)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(state_dir: str, node: str) -> Iterator[None]:
    """Serialise writers (two ctl invocations); readers need no lock thanks to the rename."""
    fd = os.open(os.path.join(state_dir, f".{node}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_state(state_dir: str, node: str, gpus: int, change: Callable[[dict], None]) -> dict:
    with _locked(state_dir, node):
        state = read_state(state_dir, node) or healthy_state(node, gpus)
        change(state)
        write_state(state_dir, node, state)
        return state


# ---------------------------------------------------------------- faults (ctl fault / heal)

def _gpu(state: dict, index: int) -> dict:
    for gpu in state["gpus"]:
        if gpu["index"] == index:
            return gpu
    raise KeyError(f"no GPU {index} on {state['node']}")


def inject_xid(state: dict, index: int, xid: int) -> None:
    gpu = _gpu(state, index)
    state["xid_events"] = [*state["xid_events"][-(MAX_EVENTS - 1):],
                           {"seq": state["next_seq"], "time": time.time(), "gpu": index, "xid": xid}]
    state["next_seq"] += 1
    if xid == 79:
        # "Fallen off the bus": on real hardware NVML then reports the GPU as lost until a reboot.
        gpu["lost"] = True


def inject_ecc(state: dict, index: int) -> None:
    gpu = _gpu(state, index)
    # An H100 remaps rows instead of retiring pages: an uncorrectable error leaves a remap
    # pending until the GPU is reset.
    gpu["ecc"]["volatile_uncorrected"] += 1
    gpu["remapped_rows"]["uncorrectable"] += 1
    gpu["remapped_rows"]["pending"] = True


def inject_hot(state: dict, index: int) -> None:
    _gpu(state, index)["temperature_c"] = HOT_TEMPERATURE_C


def remove_gpu(state: dict, index: int) -> None:
    _gpu(state, index)["present"] = False


def add_process(state: dict, index: int, pid: int) -> None:
    _gpu(state, index)["processes"].append({"pid": pid, "used_memory_mib": 1024})


# ---------------------------------------------------------------- the backend

def _pid_alive(pid: int) -> bool:
    """Running, as the driver sees it: an exited process (even a zombie not yet reaped by
    its parent) has released its GPU context."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class EmulatedBackend(Backend):
    name = "emulated"

    def __init__(self, state_dir: str, node: str) -> None:
        self.node = node
        # A GPU node without a state file has no GPUs: the count check then says so.
        self.state = read_state(state_dir, node) or {"epoch": "", "gpus": [], "xid_events": []}
        # NVML numbers the GPUs it can see from 0, so a missing GPU shifts the ones after it.
        self.visible = [g for g in self.state["gpus"] if g.get("present", True)]

    def count(self) -> int:
        return len(self.visible)

    def sample(self, index: int) -> GpuSample:
        gpu = self.visible[index]
        if gpu.get("lost"):
            return GpuSample(index, uuid=gpu["uuid"], reachable=False, lost=True, error="GPU is lost")
        ecc, pages, rows = gpu["ecc"], gpu["retired_pages"], gpu["remapped_rows"]
        links = [LinkSample(i, link["active"], link["replay"], link["recovery"], link["crc"])
                 for i, link in enumerate(gpu["nvlink"])]
        return GpuSample(
            index, uuid=gpu["uuid"], temperature_c=gpu["temperature_c"], power_w=gpu["power_w"],
            power_limit_w=gpu["power_limit_w"], ecc_uncorrected=ecc["volatile_uncorrected"],
            ecc_corrected=ecc["volatile_corrected"], retired_pages=pages["count"],
            retired_pending=pages["pending"], remap_pending=rows["pending"], remap_failure=rows["failure"],
            links=links)

    def processes(self, index: int) -> list[int]:
        # Like the driver, forget processes that have exited.
        return [p["pid"] for p in self.visible[index]["processes"] if _pid_alive(p["pid"])]

    def xid_events(self, cursor: dict | None) -> tuple[list[XidEvent], dict]:
        epoch = self.state["epoch"]
        last = (cursor or {}).get("seq", 0) if (cursor or {}).get("epoch") == epoch else 0
        fresh = [e for e in self.state["xid_events"] if e["seq"] > last]
        events = [XidEvent(e["xid"], e.get("gpu")) for e in fresh]
        return events, {"epoch": epoch, "seq": max([last, *(e["seq"] for e in fresh)])}
