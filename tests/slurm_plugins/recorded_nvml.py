"""A stand-in for the pynvml module: the functions NvmlBackend calls, answering with recorded values.

This is the only fake in the test suite, and it stands in for GPU hardware this machine does
not have. Constants and error classes are pynvml's own (the real `nvidia-ml-py` package), so
errors carry the same codes and types a real driver produces; only the per-device answers are
canned. The values are shaped like what NVML returns on an 8 x H100 SXM node (and, for page
retirement, a V100): temperatures in °C, power in mW, PCI bus ids as bytes.
"""

from __future__ import annotations

import copy

import pynvml

LINKS = 18


class Fail:
    """A recorded NVML error: the call raises pynvml.NVMLError with this code."""

    def __init__(self, code: int) -> None:
        self.code = code


def h100(index: int) -> dict:
    """One healthy H100 SXM as NVML reports it (no page retirement: it remaps rows)."""
    return {
        "uuid": f"GPU-5c3f0a1e-9d2b-4c7e-8a10-00000000000{index}",
        "bus_id": f"00000000:{0x18 + index * 0x10:02X}:00.0".encode(),
        "temperature": 41 + index, "power_mw": 118_532, "power_limit_mw": 700_000,
        "ecc": {"uncorrected": 0, "corrected": 0},
        "retired_pages": Fail(pynvml.NVML_ERROR_NOT_SUPPORTED),
        "retired_pending": Fail(pynvml.NVML_ERROR_NOT_SUPPORTED),
        "remapped_rows": (0, 0, 0, 0),
        "nvlink_state": [pynvml.NVML_FEATURE_ENABLED] * LINKS,
        "nvlink_errors": [{"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0} for _ in range(LINKS)],
        "processes": [],
    }


def v100(index: int) -> dict:
    """A V100: retires pages instead of remapping rows, 6 NVLinks."""
    gpu = h100(index)
    gpu.update(retired_pages={"sbe": 0, "dbe": 0}, retired_pending=pynvml.NVML_FEATURE_DISABLED,
               remapped_rows=Fail(pynvml.NVML_ERROR_NOT_SUPPORTED), power_limit_mw=300_000,
               nvlink_state=[pynvml.NVML_FEATURE_ENABLED] * 6,
               nvlink_errors=[{"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0} for _ in range(6)])
    return gpu


class _Process:
    def __init__(self, pid: int) -> None:
        self.pid, self.usedGpuMemory = pid, 1 << 30


class _PciInfo:
    def __init__(self, bus_id: bytes) -> None:
        self.busId = bus_id


class RecordedNvml:
    """pynvml's constants and errors, with device calls answered from `gpus` (index -> dict)."""

    def __init__(self, gpus: list[dict], *, count: int | None = None) -> None:
        self.gpus = copy.deepcopy(gpus)
        self._count = len(gpus) if count is None else count
        self.shutdown_called = False

    def __getattr__(self, name: str):
        if name.startswith(("NVML_", "NVMLError")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    @staticmethod
    def _answer(value):
        if isinstance(value, Fail):
            raise pynvml.NVMLError(value.code)
        return value

    def _gpu(self, handle: int, key: str):
        return self._answer(self.gpus[handle][key])

    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlDeviceGetCount(self) -> int:
        return self._count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index >= self._count:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._answer(self.gpus[index])  # a whole GPU recorded as an error fails right here
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle, "uuid")

    def nvmlDeviceGetPciInfo(self, handle: int) -> _PciInfo:
        return _PciInfo(self._gpu(handle, "bus_id"))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle, "temperature")

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._gpu(handle, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return self._gpu(handle, "power_limit_mw")

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter_type: int) -> int:
        assert counter_type == pynvml.NVML_VOLATILE_ECC
        ecc = self._gpu(handle, "ecc")
        kind = "uncorrected" if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else "corrected"
        return self._answer(ecc[kind])

    def nvmlDeviceGetRetiredPages(self, handle: int, cause: int) -> list[int]:
        pages = self._gpu(handle, "retired_pages")
        n = pages["dbe"] if cause == pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR else pages["sbe"]
        return [0x1000 * (i + 1) for i in range(n)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: int) -> int:
        return self._gpu(handle, "retired_pending")

    def nvmlDeviceGetRemappedRows(self, handle: int) -> tuple[int, int, int, int]:
        return self._gpu(handle, "remapped_rows")

    def nvmlDeviceGetNvLinkState(self, handle: int, link: int) -> int:
        states = self._gpu(handle, "nvlink_state")
        if isinstance(states, Fail):
            raise pynvml.NVMLError(states.code)
        if link >= len(states):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._answer(states[link])

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: int, link: int, counter: int) -> int:
        names = {pynvml.NVML_NVLINK_ERROR_DL_REPLAY: "replay", pynvml.NVML_NVLINK_ERROR_DL_RECOVERY: "recovery",
                 pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT: "crc_flit", pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA: "crc_data"}
        return self._answer(self._gpu(handle, "nvlink_errors")[link][names[counter]])

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Process]:
        return [_Process(pid) for pid in self._gpu(handle, "processes")]
