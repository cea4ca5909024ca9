"""Turn slurmrestd JSON and Slurm CLI text into the gateway's dataclasses."""

from __future__ import annotations

from datetime import UTC, datetime

from portal.slurm.types import (
    AccountingRecord,
    Association,
    JobInfo,
    NodeInfo,
    PartitionInfo,
    PriorityFactors,
    gpu_count,
)

# squeue's narrow sweep: cheap fields only (about 8 µs a job), separated by a byte no job
# name or comment can hold so that user text never shifts the columns.
SEP = "\x1f"
SQUEUE_FIELDS = ["%i", "%T", "%N", "%u", "%a", "%r", "%P", "%V", "%S", "%e", "%l", "%j", "%k"]
SQUEUE_FORMAT = SEP.join(SQUEUE_FIELDS)
SACCT_FIELDS = "JobIDRaw,State,ExitCode,ElapsedRaw,CPUTimeRAW,MaxRSS,Start,End"


def epoch(value: int | None) -> datetime | None:
    """slurmrestd gives Unix seconds; 0 means 'not yet'."""
    if not value:
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def cli_time(value: str) -> datetime | None:
    """squeue/sacct print local times like 2026-11-21T23:50:01, or N/A, Unknown, None."""
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


def minutes(value: str) -> int | None:
    """Slurm time limits: [D-]HH:MM:SS, MM:SS, or UNLIMITED."""
    if not value or value in {"UNLIMITED", "NOT_SET", "INVALID"}:
        return None
    days, _, rest = value.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, mins, secs = parts
    return (int(days or 0) * 24 + hours) * 60 + mins + (1 if secs else 0)


def job_from_rest(data: dict) -> JobInfo:
    exit_code = data.get("exit_code")
    return JobInfo(
        job_id=int(data["job_id"]), name=data.get("name", ""), user=data.get("user_name", ""),
        account=data.get("account", ""), partition=data.get("partition", ""),
        state=data.get("job_state", ""), reason=data.get("state_reason", ""),
        nodes=data.get("nodes", ""), submit_time=epoch(data.get("submit_time")),
        start_time=epoch(data.get("start_time")) if data.get("job_state") != "PENDING" else None,
        end_time=epoch(data.get("end_time")) if data.get("job_state") not in ("PENDING", "RUNNING") else None,
        comment=data.get("comment", ""), exit_code=exit_code if isinstance(exit_code, int) else None,
        restarts=int(data.get("restart_cnt") or 0), stdout=data.get("standard_output", ""),
        stderr=data.get("standard_error", ""),
        working_dir=data.get("current_working_directory", ""),
        time_limit_min=data.get("time_limit") if isinstance(data.get("time_limit"), int) else None,
        estimated_start=epoch(data.get("start_time")) if data.get("job_state") == "PENDING" else None,
    )


def jobs_from_squeue(text: str) -> list[JobInfo]:
    jobs = []
    for line in text.splitlines():
        cols = line.split(SEP)
        if len(cols) != len(SQUEUE_FIELDS):
            continue
        job_id, state, nodes, user, account, reason, part, submit, start, end, limit, name, comment = cols
        jobs.append(JobInfo(
            job_id=int(job_id.split("_")[0]) if job_id.split("_")[0].isdigit() else 0,
            name=name, user=user, account=account, partition=part, state=state,
            reason="" if reason == "None" else reason, nodes=nodes,
            submit_time=cli_time(submit), start_time=cli_time(start) if state != "PENDING" else None,
            end_time=cli_time(end) if state not in ("PENDING", "RUNNING") else None,
            comment="" if comment == "(null)" else comment, time_limit_min=minutes(limit),
        ))
    return [job for job in jobs if job.job_id]


def node_from_rest(data: dict) -> NodeInfo:
    return NodeInfo(
        name=data["name"], state=str(data.get("state", "")).upper(),
        flags=tuple(str(f).upper() for f in data.get("state_flags") or ()),
        reason=data.get("reason") or "", gres=data.get("gres") or "",
        gres_used=data.get("gres_used") or "", cpus=int(data.get("cpus") or 0),
        alloc_cpus=int(data.get("alloc_cpus") or 0),
        real_memory_mb=int(data.get("real_memory") or 0),
        partitions=tuple(data.get("partitions") or ()),
    )


def _tres_gpus(tres: str) -> int:
    for item in (tres or "").split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu" and value.isdigit():
            return int(value)
    return 0


def partition_from_rest(data: dict) -> PartitionInfo:
    max_time = data.get("max_time_limit")
    return PartitionInfo(
        name=data["name"], nodes=data.get("nodes", ""),
        is_default="default" in (data.get("flags") or []), state=data.get("state", ""),
        max_time_min=max_time if isinstance(max_time, int) and max_time >= 0 else None,
        total_nodes=int(data.get("total_nodes") or 0), total_gpus=_tres_gpus(data.get("tres", "")),
    )


def _rss_kb(value: str) -> int | None:
    units = {"K": 1, "M": 1024, "G": 1024 * 1024, "T": 1024 ** 3}
    if not value:
        return None
    if value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value) // 1024 if value.isdigit() else None


def accounting_from_sacct(text: str) -> list[AccountingRecord]:
    """Fold sacct's job and step rows into one record per job (MaxRSS lives on steps)."""
    records: dict[int, dict] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) != 8:
            continue
        raw_id, state, exit_code, elapsed, cpu, rss, start, end = cols
        job_id = int(raw_id.split(".")[0])
        rec = records.setdefault(job_id, {"max_rss_kb": None})
        if "." not in raw_id:
            code, _, sig = exit_code.partition(":")
            rec.update(state=state.split()[0], exit_code=int(code) if code.isdigit() else None,
                       signal=int(sig) if sig.isdigit() else None, elapsed_s=int(elapsed or 0),
                       cpu_time_s=int(cpu or 0), start_time=cli_time(start), end_time=cli_time(end))
        rss_kb = _rss_kb(rss)
        if rss_kb is not None and (rec["max_rss_kb"] is None or rss_kb > rec["max_rss_kb"]):
            rec["max_rss_kb"] = rss_kb
    return [AccountingRecord(job_id=jid, **rec) for jid, rec in records.items() if "state" in rec]


def priority_from_sprio(text: str) -> PriorityFactors | None:
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) == 7:
            try:
                values = [float(c) for c in cols[1:]]
            except ValueError:
                continue
            return PriorityFactors(*values)
    return None


def associations_from_sacctmgr(text: str) -> list[Association]:
    result = []
    for line in text.splitlines():
        account, _, user = line.partition("|")
        if account:
            result.append(Association(account=account, user=user.strip("|")))
    return result


__all__ = ["gpu_count"]
