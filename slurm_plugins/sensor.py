"""One sensor run, shared by the prolog, epilog and health check hooks.

1. Check the GPUs (count, reachability, ECC, memory repair, temperature, power, NVLink, XIDs
   since the last run; after a job also stray processes on its GPUs).
2. Report to the portal, signed, after replaying anything spooled; spool when it is down.
3. Act locally on fatal findings only when the portal did not take the report (otherwise its
   policy decides), or when this prolog/epilog is about to fail: Slurm drains the node then
   anyway, and the `portal:` reason keeps that drain under the policy's care.

Exit status: a prolog or epilog fails only for a real node fault. A sensor that breaks, a
bad config or a down portal never fails a job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
import zlib

from slurm_plugins import checks, report
from slurm_plugins.config import Config, ConfigError, load
from slurm_plugins.findings import REBOOT, WARNING, Finding
from slurm_plugins.gpu import Backend, open_backend

SOURCES = ("prolog", "epilog", "healthcheck")
LOCK_WAIT_S = 1.0
KILL_WAIT_S = 0.5
LOG_MAX_BYTES = 1 << 20


class SensorState:
    """What one run leaves for the next: XID cursors and how the last report went."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            data = {}
        self.cursors: dict = data.get("cursors", {})
        self.last_report_at: float = data.get("last_report_at", 0.0)
        self.last_clean: bool = data.get("last_clean", False)
        self.portal_down: bool = data.get("portal_down", False)
        self.last_findings: list[str] = data.get("last_findings", [])

    def save(self) -> None:
        data = {"cursors": self.cursors, "last_report_at": self.last_report_at, "last_clean": self.last_clean,
                "portal_down": self.portal_down, "last_findings": self.last_findings}
        with open(self.path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(self.path + ".tmp", self.path)


class RunResult:
    __slots__ = ("action", "findings", "outcome")

    def __init__(self, findings: list[Finding], outcome: str, action: str | None) -> None:
        self.findings, self.outcome, self.action = findings, outcome, action

    @property
    def node_fault(self) -> bool:
        return any(f.takes_node_out for f in self.findings)


# ---------------------------------------------------------------- checks

def job_gpus(environ: dict[str, str]) -> list[int]:
    """The job's GPU indices, from SLURM_JOB_GPUS ("0,2"), which slurmd sets for prolog/epilog."""
    raw = environ.get("SLURM_JOB_GPUS", "")
    return [int(g) for g in raw.split(",") if g.strip().isdigit()]


def _kill_strays(backend: Backend, index: int, pids: list[int]) -> list[int]:
    """SIGKILL leftovers, then wait briefly for the GPU to let go. Returns the survivors."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        left = [p for p in backend.processes(index) if p in pids]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def stray_processes(config: Config, backend: Backend, environ: dict[str, str], job_id: int | None) -> list[Finding]:
    findings = []
    for index in job_gpus(environ):
        if index >= backend.count():
            continue
        pids = [p for p in backend.processes(index) if p != os.getpid()]
        if not pids:
            continue
        survivors = _kill_strays(backend, index, pids) if config.kill_stray else pids
        killed = [p for p in pids if p not in survivors]
        findings += checks.stray(index, killed=killed, survivors=survivors, job_id=job_id)
    return findings


def collect(config: Config, backend: Backend, source: str, *, environ: dict[str, str], state: SensorState,
            job_id: int | None) -> list[Finding]:
    found = backend.count()
    findings = checks.gpu_count(found, config.expected_gpus, getattr(backend, "why", ""))
    for index in range(found):
        findings += checks.gpu(backend.sample(index), config.thresholds, config.nvlink_down_is_fatal)
    events, state.cursors[backend.name] = backend.xid_events(state.cursors.get(backend.name))
    findings += checks.xids(events, config.xid_overrides)
    if source == "epilog":
        findings += stray_processes(config, backend, environ, job_id)
    return findings


# ---------------------------------------------------------------- reporting and acting

def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+00:00"


def build_body(config: Config, source: str, job_id: int | None, findings: list[Finding]) -> dict:
    return {"node": config.node, "source": source, "sent_at": _iso(time.time()), "job_id": job_id,
            "findings": [f.as_dict() for f in findings], "spooled": False}


def _is_clean(findings: list[Finding]) -> bool:
    return not any(f.severity in ("fatal", WARNING) for f in findings)


def deliver(config: Config, envelope: report.Envelope, state: SensorState, clean: bool) -> tuple[str, str]:
    """Replay the spool, then send this report, or spool it. Returns (outcome, detail)."""
    try:
        key = report.read_key(config.key_file)
    except OSError as exc:
        report.spool(config.spool_dir, envelope, config.spool_max)
        return report.UNREACHABLE, f"cannot sign: node key {config.key_file}: {exc.strerror}"
    _sent, _dropped, down = report.replay(config.spool_dir, config.portal_url, config.node, key,
                                          timeout=config.timeout, budget_s=config.replay_budget_s)
    if down:
        report.spool(config.spool_dir, envelope, config.spool_max)
        return report.UNREACHABLE, "portal unreachable (replay failed)"
    throttled = clean and state.last_clean and config.clean_report_interval > 0 and \
        time.time() - state.last_report_at < config.clean_report_interval
    if throttled:
        return report.ACCEPTED, "clean report skipped (clean_report_interval)"
    outcome, detail = report.post(config.portal_url, config.node, envelope, key, config.timeout)
    if outcome == report.UNREACHABLE:
        report.spool(config.spool_dir, envelope, config.spool_max)
    else:
        state.last_report_at = time.time()
    return outcome, detail


def act_locally(config: Config, source: str, findings: list[Finding], outcome: str) -> str | None:
    fatal = [f for f in findings if f.takes_node_out]
    if not fatal or (outcome == report.ACCEPTED and source == "healthcheck"):
        return None
    from slurm_plugins import slurmctl  # noqa: PLC0415  (subprocess is only needed to drain)

    fatal.sort(key=lambda f: f.action != REBOOT)  # a reboot-needing fault names the drain first
    first = fatal[0]
    return slurmctl.drain(config.scontrol, config.node, slurmctl.drain_reason(first.check, first.detail,
                                                                              len(fatal) - 1))


# ---------------------------------------------------------------- the run

def _lock(state_dir: str) -> int | None:
    """One run per node at a time, so two hooks never report the same XID; a stuck run
    (a hung GPU can stall NVML) delays the next one by at most LOCK_WAIT_S."""
    fd = os.open(os.path.join(state_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.02)


def log(config: Config, message: str) -> None:
    """Notable events go to stderr (slurmd logs a failing hook's output) and to sensor.log."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {config.node}: {message}"
    print(line, file=sys.stderr)
    path = os.path.join(config.state_dir, "sensor.log")
    try:
        if os.path.exists(path) and os.path.getsize(path) > LOG_MAX_BYTES:
            os.replace(path, path + ".1")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        pass    # a full or read-only disk must not turn a finding into a sensor crash


def _log_outcome(config: Config, source: str, result: RunResult, detail: str, state: SensorState) -> None:
    down = result.outcome == report.UNREACHABLE
    if down != state.portal_down:
        log(config, f"portal {'unreachable, spooling reports' if down else 'reachable again'} ({detail})")
    state.portal_down = down
    if result.outcome == report.REJECTED:
        log(config, f"portal rejected the {source} report: {detail}")
    # A lasting fault is found again every few seconds: log it when it appears, not each time.
    lines = [f"{f.severity} {f.action} {f.check}: {f.detail}" for f in result.findings if f.severity != "info"]
    for line in lines:
        if line not in state.last_findings or source != "healthcheck":
            log(config, f"{source}: {line}")
    state.last_findings = lines
    if result.action and not result.action.startswith("already drained"):
        log(config, result.action)


def run(config: Config, source: str, environ: dict[str, str]) -> RunResult:
    job_id = int(environ["SLURM_JOB_ID"]) if environ.get("SLURM_JOB_ID", "").isdigit() else None
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    lock = _lock(config.state_dir)
    try:
        state = SensorState(os.path.join(config.state_dir, "state.json"))
        backend = open_backend(config)
        try:
            findings = collect(config, backend, source, environ=environ, state=state, job_id=job_id)
        finally:
            backend.close()
        envelope = report.Envelope(build_body(config, source, job_id, findings))
        outcome, detail = deliver(config, envelope, state, _is_clean(findings))
        result = RunResult(findings, outcome, act_locally(config, source, findings, outcome))
        _log_outcome(config, source, result, detail, state)
        state.last_clean = _is_clean(findings)
        state.save()
        return result
    finally:
        if lock is not None:
            os.close(lock)


def check_only(config: Config, source: str, environ: dict[str, str]) -> list[Finding]:
    """What a run would find right now: no report, no drain, no cursor moved."""
    state = SensorState(os.path.join(config.state_dir, "state.json"))
    backend = open_backend(config)
    try:
        job_id = int(environ["SLURM_JOB_ID"]) if environ.get("SLURM_JOB_ID", "").isdigit() else None
        return collect(config, backend, source if source != "epilog" else "healthcheck", environ=environ,
                       state=state, job_id=job_id)
    finally:
        backend.close()


def _usage(source: str) -> str:
    return (f"usage: {source} [--check-only] [--node NAME]\n"
            "  Slurm runs this hook itself. --check-only prints what it finds as JSON lines and\n"
            "  changes nothing (no report, no drain). --node overrides SLURMD_NODENAME.")


def _parse(argv: list[str]) -> tuple[bool, str | None] | None:
    """(--check-only given, --node value), or None for anything else. No argparse: it costs
    imports, and Slurm passes no arguments anyway."""
    only, node, rest = False, None, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--check-only":
            only = True
        elif arg == "--node" and rest:
            node = rest.pop(0)
        else:
            return None
    return only, node


def spread_delay(node: str, spread_s: float) -> float:
    """This node's fixed place in [0, spread_s): the same every run, different across nodes."""
    return zlib.crc32(node.encode()) / 2**32 * spread_s


def main(source: str, argv: list[str] | None = None) -> int:
    parsed = _parse(sys.argv[1:] if argv is None else argv)
    if parsed is None:
        print(_usage(source), file=sys.stderr)
        return 2
    only, node = parsed
    environ = dict(os.environ, **({"SLURMD_NODENAME": node} if node else {}))
    try:
        config = load(environ)
    except ConfigError as exc:
        print(f"{source}: health.conf: {exc}", file=sys.stderr)
        return 0 if source != "healthcheck" else 2
    try:
        if only:
            for finding in check_only(config, source, environ):
                print(json.dumps(finding.as_dict()))
            return 0
        if source == "healthcheck" and config.spread_s:
            time.sleep(spread_delay(config.node, config.spread_s))
        result = run(config, source, environ)
    except Exception as exc:  # a broken sensor is not a broken node: never fail the job for it
        print(f"{source}: sensor error on {config.node}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0 if source != "healthcheck" else 2
    return 1 if result.node_fault else 0
