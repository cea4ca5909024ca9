"""The NVML backend: real GPUs through pynvml (the `nvidia-ml-py` package).

Only documented pynvml functions are used, and every reading degrades to None when this GPU
or driver does not support it (an H100 has no page retirement, a PCIe card no NVLink), so a
missing feature is never mistaken for a fault. Any other NVML error while talking to a GPU
marks it unreachable; NVML_ERROR_GPU_IS_LOST means it fell off the bus (reboot needed).
XIDs come from the kernel log (slurm_plugins/kmsg.py), mapped to GPUs by PCI bus id.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

from slurm_plugins import kmsg
from slurm_plugins.gpu import Backend, BackendUnavailable, GpuSample, LinkSample, XidEvent


class _Unsupported(Exception):
    """This reading is not available on this GPU; the sample field stays None."""


class NvmlBackend(Backend):
    name = "nvml"

    def __init__(self, nv: ModuleType | Any, kmsg_path: str = "/dev/kmsg") -> None:
        """`nv` is the pynvml module (tests pass an object with recorded NVML values)."""
        self.nv, self.kmsg_path = nv, kmsg_path
        # Errors that mean "cannot tell", not "broken": skip the reading.
        self._benign = {nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_NO_PERMISSION,
                        nv.NVML_ERROR_FUNCTION_NOT_FOUND}

    @classmethod
    def open(cls, kmsg_path: str = "/dev/kmsg") -> NvmlBackend:
        try:
            import pynvml  # noqa: PLC0415  (only on nodes with an NVIDIA driver)
        except ImportError as exc:
            raise BackendUnavailable(f"pynvml is not installed ({exc})") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise BackendUnavailable(str(exc)) from None
        return cls(pynvml, kmsg_path)

    def close(self) -> None:
        with contextlib.suppress(self.nv.NVMLError):
            self.nv.nvmlShutdown()

    def count(self) -> int:
        return self.nv.nvmlDeviceGetCount()

    def _read(self, fn, *args):
        try:
            return fn(*args)
        except self.nv.NVMLError as exc:
            if exc.value in self._benign:
                raise _Unsupported from None
            raise

    def _optional(self, fn, *args):
        try:
            return self._read(fn, *args)
        except _Unsupported:
            return None

    def sample(self, index: int) -> GpuSample:
        nv = self.nv
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
            sample = GpuSample(index, uuid=uuid)
            self._fill_thermal(sample, handle)
            self._fill_memory(sample, handle)
            sample.links = self._links(handle)
        except nv.NVMLError as exc:
            lost = exc.value == nv.NVML_ERROR_GPU_IS_LOST
            return GpuSample(index, reachable=False, lost=lost, error=str(exc))
        return sample

    def _fill_thermal(self, sample: GpuSample, handle) -> None:
        nv = self.nv
        sample.temperature_c = self._optional(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
        power_mw = self._optional(nv.nvmlDeviceGetPowerUsage, handle)
        limit_mw = self._optional(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        sample.power_w = power_mw / 1000 if power_mw is not None else None
        sample.power_limit_w = limit_mw / 1000 if limit_mw is not None else None

    def _fill_memory(self, sample: GpuSample, handle) -> None:
        nv = self.nv
        sample.ecc_uncorrected = self._optional(nv.nvmlDeviceGetTotalEccErrors, handle,
                                                nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC)
        sample.ecc_corrected = self._optional(nv.nvmlDeviceGetTotalEccErrors, handle,
                                              nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_VOLATILE_ECC)
        # Pre-Ampere GPUs retire pages; Ampere and later remap rows. Each says "not supported"
        # for the other mechanism.
        try:
            sbe = self._read(nv.nvmlDeviceGetRetiredPages, handle,
                             nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
            dbe = self._read(nv.nvmlDeviceGetRetiredPages, handle, nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
            sample.retired_pages = len(sbe) + len(dbe)
            pending = self._read(nv.nvmlDeviceGetRetiredPagesPendingStatus, handle)
            sample.retired_pending = pending == nv.NVML_FEATURE_ENABLED
        except _Unsupported:
            pass
        rows = self._optional(nv.nvmlDeviceGetRemappedRows, handle)
        if rows is not None:
            _corr, _unc, pending, failure = rows
            sample.remap_pending, sample.remap_failure = bool(pending), bool(failure)

    def _links(self, handle) -> list[LinkSample]:
        nv = self.nv
        links = []
        for link in range(nv.NVML_NVLINK_MAX_LINKS):
            try:
                state = self._read(nv.nvmlDeviceGetNvLinkState, handle, link)
            except _Unsupported:
                break               # no (more) NVLinks on this GPU
            except nv.NVMLError as exc:
                if exc.value == nv.NVML_ERROR_INVALID_ARGUMENT:
                    break           # past the last link this GPU has
                raise
            counter = self._link_counter
            crc = counter(handle, link, nv.NVML_NVLINK_ERROR_DL_CRC_FLIT) + \
                counter(handle, link, nv.NVML_NVLINK_ERROR_DL_CRC_DATA)
            links.append(LinkSample(link, state == nv.NVML_FEATURE_ENABLED,
                                    replay=counter(handle, link, nv.NVML_NVLINK_ERROR_DL_REPLAY),
                                    recovery=counter(handle, link, nv.NVML_NVLINK_ERROR_DL_RECOVERY), crc=crc))
        return links

    def _link_counter(self, handle, link: int, kind: int) -> int:
        value = self._optional(self.nv.nvmlDeviceGetNvLinkErrorCounter, handle, link, kind)
        return int(value or 0)

    def processes(self, index: int) -> list[int]:
        handle = self.nv.nvmlDeviceGetHandleByIndex(index)
        return [p.pid for p in self.nv.nvmlDeviceGetComputeRunningProcesses(handle)]

    def _pci_to_index(self) -> dict[tuple[int, int, int], int]:
        mapping = {}
        for index in range(self.count()):
            try:
                handle = self.nv.nvmlDeviceGetHandleByIndex(index)
                mapping[kmsg.pci_key(self.nv.nvmlDeviceGetPciInfo(handle).busId)] = index
            except self.nv.NVMLError:
                continue    # an unreachable GPU: its XIDs are reported without an index
        return mapping

    def xid_events(self, cursor: dict | None) -> tuple[list[XidEvent], dict]:
        try:
            raw, cursor = kmsg.read_xids(self.kmsg_path, cursor)
        except OSError:
            return [], cursor or {}     # no kernel log access (not root?): XIDs unknown
        if not raw:
            return [], cursor
        by_pci = self._pci_to_index()
        events = [XidEvent(xid, by_pci.get(kmsg.pci_key(pci)), f"PCI {pci}: {rest}"[:200]) for pci, xid, rest in raw]
        return events, cursor


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
