"""The GPU backend interface: what a sensor can ask about the node's GPUs.

Two implementations: NVML (real hardware, slurm_plugins/nvml.py) and an emulated backend
whose state `./cluster/ctl fault|heal` changes (slurm_plugins/emulated.py). The checks in
slurm_plugins/checks.py only ever see the samples defined here, so both backends are judged
by exactly the same rules.
"""

from __future__ import annotations

import os
import sys

from slurm_plugins.config import Config


class BackendUnavailable(Exception):
    """This backend cannot run on this node (no driver, no pynvml, no state file dir)."""


class LinkSample:
    __slots__ = ("active", "crc", "link", "recovery", "replay")

    def __init__(self, link: int, active: bool, replay: int = 0, recovery: int = 0, crc: int = 0) -> None:
        self.link, self.active, self.replay, self.recovery, self.crc = link, active, replay, recovery, crc


class GpuSample:
    """One GPU's readings. None means "this GPU cannot tell" (not supported), never "zero"."""

    __slots__ = ("ecc_corrected", "ecc_uncorrected", "error", "index", "links", "lost", "power_limit_w",
                 "power_w", "reachable", "remap_failure", "remap_pending", "retired_pages", "retired_pending",
                 "temperature_c", "uuid")

    def __init__(self, index: int, *, uuid: str = "", reachable: bool = True, lost: bool = False,
                 error: str = "", temperature_c: float | None = None, power_w: float | None = None,
                 power_limit_w: float | None = None, ecc_uncorrected: int | None = None,
                 ecc_corrected: int | None = None, retired_pages: int | None = None,
                 retired_pending: bool | None = None, remap_pending: bool | None = None,
                 remap_failure: bool | None = None, links: list[LinkSample] | None = None) -> None:
        self.index, self.uuid, self.reachable, self.lost, self.error = index, uuid, reachable, lost, error
        self.temperature_c, self.power_w, self.power_limit_w = temperature_c, power_w, power_limit_w
        self.ecc_uncorrected, self.ecc_corrected = ecc_uncorrected, ecc_corrected
        self.retired_pages, self.retired_pending = retired_pages, retired_pending
        self.remap_pending, self.remap_failure = remap_pending, remap_failure
        self.links = links or []


class XidEvent:
    __slots__ = ("detail", "gpu", "xid")

    def __init__(self, xid: int, gpu: int | None, detail: str = "") -> None:
        self.xid, self.gpu, self.detail = xid, gpu, detail


class Backend:
    """The interface. `cursor` is the backend's own bookmark for "XIDs since the last run"."""

    name = "none"

    def count(self) -> int:
        raise NotImplementedError

    def sample(self, index: int) -> GpuSample:
        raise NotImplementedError

    def processes(self, index: int) -> list[int]:
        """PIDs of compute processes on GPU `index`."""
        raise NotImplementedError

    def xid_events(self, cursor: dict | None) -> tuple[list[XidEvent], dict]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class NoGpuBackend(Backend):
    """No GPUs visible. On a node expected to have some, `why` explains it in the finding."""

    name = "none"

    def __init__(self, why: str) -> None:
        self.why = why

    def count(self) -> int:
        return 0

    def sample(self, index: int) -> GpuSample:
        raise IndexError(index)

    def processes(self, index: int) -> list[int]:
        return []

    def xid_events(self, cursor: dict | None) -> tuple[list[XidEvent], dict]:
        return [], cursor or {}


def _open_nvml(config: Config) -> Backend:
    # The hooks run with `python3 -S` (no site-packages: faster start). pynvml comes from the
    # configured path, else from the interpreter's usual site-packages, added only now.
    if config.pynvml_path:
        if config.pynvml_path not in sys.path:
            sys.path.append(config.pynvml_path)
    elif "site" not in sys.modules:
        import site  # noqa: PLC0415

        site.main()
    from slurm_plugins.nvml import NvmlBackend  # noqa: PLC0415  (pynvml costs ~40 ms: only when needed)

    return NvmlBackend.open(kmsg_path=config.kmsg)


def open_backend(config: Config) -> Backend:
    """NVML when it initialises, else the emulated backend when configured, else no GPUs.

    In `auto` mode NVML is tried only where the NVIDIA driver's control device exists:
    importing pynvml alone costs ~40 ms, which a GPU-less node should not pay every run.
    """
    why = ""
    if config.backend == "nvml" or (config.backend == "auto" and os.path.exists(config.nvidia_device)):
        try:
            return _open_nvml(config)
        except BackendUnavailable as exc:
            why = f"NVML: {exc}"
            if config.backend == "nvml":
                return NoGpuBackend(why)
    elif config.backend == "auto":
        why = f"no NVIDIA driver ({config.nvidia_device} missing)"
    if config.backend in ("auto", "emulated") and config.emulated_state_dir:
        from slurm_plugins.emulated import EmulatedBackend  # noqa: PLC0415

        return EmulatedBackend(config.emulated_state_dir, config.node)
    return NoGpuBackend(why or "no GPU backend configured")
