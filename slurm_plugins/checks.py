"""The health rules: readings in, findings out. No I/O here, so both backends and the tests
see exactly the same judgement. Thresholds come from the [thresholds] section of health.conf."""

from __future__ import annotations

from slurm_plugins.findings import DRAIN, FATAL, NONE, REBOOT, WARNING, Finding, xid_finding
from slurm_plugins.gpu import GpuSample, XidEvent


def gpu_count(found: int, expected: int, why: str = "") -> list[Finding]:
    if found < expected:
        reason = f" ({why})" if why and found == 0 else ""
        return [Finding("gpu-count", FATAL, DRAIN, f"found {found} of {expected} GPUs{reason}")]
    if found > expected > 0:   # 0: this node's count is not configured
        return [Finding("gpu-count", WARNING, NONE, f"found {found} GPUs, health.conf expects {expected}")]
    return []


def reachable(gpu: GpuSample) -> list[Finding]:
    if gpu.reachable:
        return []
    if gpu.lost:
        return [Finding("gpu-unreachable", FATAL, REBOOT, f"GPU {gpu.index} is lost (fell off the bus)",
                        gpu=gpu.index)]
    return [Finding("gpu-unreachable", FATAL, DRAIN, f"GPU {gpu.index} does not answer NVML: {gpu.error}",
                    gpu=gpu.index)]


def ecc(gpu: GpuSample, limits: dict[str, float]) -> list[Finding]:
    findings = []
    if gpu.ecc_uncorrected is not None and gpu.ecc_uncorrected > limits["ecc_uncorrected_max"]:
        findings.append(Finding("ecc", FATAL, DRAIN, f"GPU {gpu.index}: {gpu.ecc_uncorrected} uncorrected "
                                "(double-bit) ECC errors since the driver loaded", gpu=gpu.index))
    if gpu.ecc_corrected is not None and gpu.ecc_corrected >= limits["ecc_corrected_warning"]:
        findings.append(Finding("ecc", WARNING, NONE, f"GPU {gpu.index}: {gpu.ecc_corrected} corrected ECC "
                                "errors since the driver loaded", gpu=gpu.index))
    return findings


def memory_repair(gpu: GpuSample, limits: dict[str, float]) -> list[Finding]:
    """Retired pages (before Ampere) and remapped rows (Ampere and later)."""
    findings = []
    if gpu.retired_pending:
        findings.append(Finding("retired-pages", FATAL, REBOOT, f"GPU {gpu.index}: page retirement pending "
                                "(takes effect after a GPU reset)", gpu=gpu.index))
    if gpu.retired_pages is not None and gpu.retired_pages >= limits["retired_pages_max"]:
        findings.append(Finding("retired-pages", FATAL, DRAIN, f"GPU {gpu.index}: {gpu.retired_pages} retired "
                                "pages (replace the GPU)", gpu=gpu.index))
    if gpu.remap_failure:
        findings.append(Finding("remapped-rows", FATAL, DRAIN, f"GPU {gpu.index}: row remapping failed "
                                "(replace the GPU)", gpu=gpu.index))
    elif gpu.remap_pending:
        findings.append(Finding("remapped-rows", FATAL, REBOOT, f"GPU {gpu.index}: row remapping pending "
                                "(takes effect after a GPU reset)", gpu=gpu.index))
    return findings


def thermal(gpu: GpuSample, limits: dict[str, float]) -> list[Finding]:
    findings = []
    temp = gpu.temperature_c
    if temp is not None and temp >= limits["temperature_critical_c"]:
        findings.append(Finding("temperature", FATAL, DRAIN, f"GPU {gpu.index} at {temp:.0f} °C (limit "
                                f"{limits['temperature_critical_c']:.0f} °C)", gpu=gpu.index))
    elif temp is not None and temp >= limits["temperature_warning_c"]:
        findings.append(Finding("temperature", WARNING, NONE, f"GPU {gpu.index} at {temp:.0f} °C (warning at "
                                f"{limits['temperature_warning_c']:.0f} °C)", gpu=gpu.index))
    if gpu.power_w is not None and gpu.power_limit_w and \
            gpu.power_w > gpu.power_limit_w * limits["power_over_limit_ratio"]:
        findings.append(Finding("power", WARNING, NONE, f"GPU {gpu.index} draws {gpu.power_w:.0f} W over its "
                                f"{gpu.power_limit_w:.0f} W limit", gpu=gpu.index))
    return findings


def nvlink(gpu: GpuSample, limits: dict[str, float], down_is_fatal: bool) -> list[Finding]:
    findings = []
    down = [link.link for link in gpu.links if not link.active]
    # All links down is a GPU without NVLink bridges (or one not using them), not a fault.
    if down and len(down) < len(gpu.links):
        severity, action = (FATAL, DRAIN) if down_is_fatal else (WARNING, NONE)
        findings.append(Finding("nvlink", severity, action, f"GPU {gpu.index}: NVLink {_links(down)} down "
                                f"({len(gpu.links) - len(down)} of {len(gpu.links)} up)", gpu=gpu.index))
    for kind, attr in (("replay", "replay"), ("recovery", "recovery"), ("CRC", "crc")):
        limit = limits[f"nvlink_{attr}_warning"]
        bad = [link.link for link in gpu.links if getattr(link, attr) >= limit]
        if bad:
            total = sum(getattr(link, attr) for link in gpu.links)
            findings.append(Finding("nvlink", WARNING, NONE, f"GPU {gpu.index}: {total} NVLink {kind} errors "
                                    f"(links {_links(bad)} at or over {limit:.0f})", gpu=gpu.index))
    return findings


def xids(events: list[XidEvent], overrides: dict[int, tuple[str, str]]) -> list[Finding]:
    return [xid_finding(e.xid, e.gpu, overrides, e.detail) for e in events]


def gpu(sample: GpuSample, limits: dict[str, float], nvlink_down_is_fatal: bool) -> list[Finding]:
    """Every per-GPU rule; an unreachable GPU has no readings to judge."""
    if not sample.reachable:
        return reachable(sample)
    return (ecc(sample, limits) + memory_repair(sample, limits) + thermal(sample, limits)
            + nvlink(sample, limits, nvlink_down_is_fatal))


def stray(gpu_index: int, *, killed: list[int], survivors: list[int], job_id: int | None) -> list[Finding]:
    """Processes left on a job's GPU after it ended. Killed ones are a warning; survivors
    hold GPU memory the next job needs, so the node must come out of service."""
    findings = []
    after = f"after job {job_id} ended" if job_id else "after the job ended"
    if killed:
        findings.append(Finding("stray-process", WARNING, NONE, f"GPU {gpu_index}: killed stray process(es) "
                                f"{_links(killed)} {after}", gpu=gpu_index))
    if survivors:
        findings.append(Finding("stray-process", FATAL, DRAIN, f"GPU {gpu_index}: process(es) "
                                f"{_links(survivors)} still on the GPU {after}", gpu=gpu_index))
    return findings


def _links(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)
