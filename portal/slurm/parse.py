"""Turn slurmrestd JSON and Slurm CLI text into the gateway's dataclasses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import product

from portal.slurm.gres import gpu_count, gpu_type, gpu_types
from portal.slurm.types import (
    FINISHED_STATES,
    AccountingRecord,
    Association,
    AssociationLimits,
    CoordinatorChange,
    FairShareRow,
    JobDetail,
    JobInfo,
    NodeInfo,
    PartitionInfo,
    PendingJobQos,
    PriorityFactors,
    QueuedJob,
    RunRecord,
    SlurmUser,
)

# squeue's narrow sweep: cheap fields only (about 8 µs a job), separated by a byte no job
# name or comment can hold so that user text never shifts the columns.
SEP = "\x1f"
SQUEUE_FIELDS = ["%i", "%T", "%N", "%u", "%a", "%r", "%P", "%V", "%S", "%e", "%l", "%j", "%k"]
SQUEUE_FORMAT = SEP.join(SQUEUE_FIELDS)
# sacct -D (every attempt of a requeued job, oldest first, each followed by its steps).
# TotalCPU is the CPU time used; CPUTimeRAW is the time allocated (elapsed x CPUs).
SACCT_COLUMNS = ("id", "state", "exit", "elapsed", "cpu_alloc", "rss", "start", "end", "cpu_used", "cpus",
                 "req_mem", "nodes")
SACCT_FIELDS = "JobIDRaw,State,ExitCode,ElapsedRaw,CPUTimeRAW,MaxRSS,Start,End,TotalCPU,AllocCPUS,ReqMem,NodeList"

# The tracker's sweep uses `squeue -O`: `-o` has no letter for the restart count or the exit
# status. ":0" asks for the whole value (no 20-character truncation) and the text after it is
# appended to the field, so every field but the last ends with SEP. User text (name, comment)
# comes last.
TRACK_FIELDS = [
    "JobID", "State", "Reason", "NodeList", "SubmitTime", "StartTime", "EndTime", "exit_code",
    "RestartCnt", "UserName", "Account", "Partition", "NumNodes", "cpus-per-task", "MinMemory",
    "tres-per-node", "TimeLimit", "Requeue", "StdOut", "StdErr", "WorkDir", "Name", "Comment",
]
TRACK_FORMAT = ",".join([f"{name}:0{SEP}" for name in TRACK_FIELDS[:-1]] + [f"{TRACK_FIELDS[-1]}:0"])


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
        comment=data.get("comment", ""),
        exit_code=wait_status_exit_code(str(exit_code)) if isinstance(exit_code, int) else None,
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


# sbatch filename patterns: %j, %5j, %A, %u, %x, %%.
_PATTERN = re.compile(r"%(\d*)([jAux%])")


def _int(value: str) -> int:
    return int(value) if value.isdigit() else 0


def wait_status_exit_code(raw: str) -> int | None:
    """squeue's exit_code: up to 23.02 the raw wait status (768 is `exit 3`, 9 is SIGKILL), from
    24.11 on "code:signal" as sacct prints it ("3:0", "0:9"). A signal shows as 128 + its number,
    like a shell's $?."""
    code, colon, sig = raw.partition(":")
    if colon:
        if not (code.isdigit() and sig.isdigit()):
            return None
        return 128 + int(sig) if int(sig) else int(code)
    if not raw.isdigit():
        return None
    status = int(raw)
    signal = status & 0x7F
    return 128 + signal if signal else status >> 8


def memory_mb(value: str) -> int:
    """squeue's MinMemory: 1G, 500M, 4096K or a plain number of MB."""
    factors = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    try:
        if value and value[-1] in factors:
            return int(float(value[:-1]) * factors[value[-1]])
        return int(float(value))
    except ValueError:
        return 0


def gres_per_node(value: str) -> str:
    """squeue's tres-per-node ("gres:gpu:h100:4", "gres/gpu:2" or N/A) as a gres string."""
    items = [item.removeprefix("gres:").removeprefix("gres/") for item in value.split(",")]
    return ",".join(item for item in items if item and item != "N/A")


def expand_output_path(pattern: str, *, job_id: int, user: str, name: str) -> str:
    """Fill in the sbatch filename patterns squeue leaves unexpanded (%j, %A, %u, %x, %%, with widths)."""
    values = {"j": str(job_id), "A": str(job_id), "u": user, "x": name}

    def fill(match: re.Match) -> str:
        width, key = match.groups()
        return "%" if key == "%" else values[key].zfill(int(width or 0))
    return _PATTERN.sub(fill, pattern)


def _tracked_job(cols: list[str]) -> JobInfo:
    (job_id, state, reason, nodes, submit, start, end, status, restarts, user, account, partition,
     num_nodes, cpus, memory, tres, limit, requeue, stdout, stderr, workdir, name, comment) = cols
    finished = state in FINISHED_STATES
    # A job cancelled before it ran has a start time equal to its end time but no nodes.
    ran = bool(nodes) and state != "PENDING"
    jid = int(job_id)
    return JobInfo(
        job_id=jid, name=name, user=user, account=account, partition=partition, state=state,
        reason="" if reason == "None" else reason, nodes=nodes, submit_time=cli_time(submit),
        start_time=cli_time(start) if ran else None, end_time=cli_time(end) if finished else None,
        comment="" if comment == "(null)" else comment,
        exit_code=wait_status_exit_code(status) if finished and ran else None,
        restarts=_int(restarts), working_dir=workdir,
        stdout=expand_output_path(stdout, job_id=jid, user=user, name=name) if "%" in stdout else stdout,
        stderr=expand_output_path(stderr, job_id=jid, user=user, name=name) if "%" in stderr else stderr,
        time_limit_min=minutes(limit), num_nodes=_int(num_nodes), cpus_per_task=_int(cpus),
        mem_mb=memory_mb(memory), gres_per_node=gres_per_node(tres), requeue=requeue != "0",
    )


def jobs_from_tracking_sweep(text: str, *, skip_ended_before: datetime | None = None,
                             ) -> tuple[list[JobInfo], frozenset[int]]:
    """Parse the tracker's `squeue -O` sweep: the jobs, and the ids of every job in it.

    Jobs that ended before `skip_ended_before` are counted but not parsed: MinJobAge keeps
    them queued for minutes after the tracker recorded them. Lines that do not split into
    every field are skipped.
    """
    # squeue prints local times; an ISO string of the same zone compares in time order.
    cutoff = skip_ended_before.astimezone().strftime("%Y-%m-%dT%H:%M:%S") if skip_ended_before else ""
    end_column = TRACK_FIELDS.index("EndTime")
    jobs, ids = [], set()
    for line in text.splitlines():
        cols = line.split(SEP)
        if len(cols) != len(TRACK_FIELDS) or not cols[0].isdigit():
            continue
        ids.add(int(cols[0]))
        if not (cutoff and cols[1] in FINISHED_STATES and cols[end_column] < cutoff):
            jobs.append(_tracked_job(cols))
    return jobs, frozenset(ids)


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


def job_detail_from_rest(data: dict) -> JobDetail:
    priority = data.get("priority")
    return JobDetail(
        job_id=int(data["job_id"]), state=data.get("job_state", ""),
        reason="" if data.get("state_reason") in (None, "None") else data["state_reason"],
        restarts=int(data.get("restart_cnt") or 0), nodes=data.get("nodes") or "",
        required_nodes=data.get("required_nodes") or "", excluded_nodes=data.get("excluded_nodes") or "",
        priority=priority if isinstance(priority, int) else 0, eligible_time=epoch(data.get("eligible_time")),
        admin_comment=data.get("admin_comment") or "", requeue=bool(data.get("requeue")),
        gpus=_tres_gpus(data.get("tres_alloc_str") or ""),
    )


# sacct -D -X: one row per run of each job, oldest first (no steps).
RUN_FIELDS = "JobIDRaw,State,ExitCode,NodeList,Start,End,ElapsedRaw,AllocTRES"


def runs_from_sacct(text: str) -> dict[int, list[RunRecord]]:
    runs: dict[int, list[RunRecord]] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) != 8 or not cols[0].isdigit():
            continue
        raw_id, state, exit_status, nodes, start, end, elapsed, tres = cols
        job_runs = runs.setdefault(int(raw_id), [])
        code, sig = _code_signal(exit_status)
        job_runs.append(RunRecord(
            job_id=int(raw_id), index=len(job_runs), state=state.split()[0] if state else "",
            exit_code=code, signal=sig or None, nodes="" if nodes in ("", "None assigned") else nodes,
            start_time=cli_time(start), end_time=cli_time(end), elapsed_s=_int(elapsed), gpus=_tres_gpus(tres)))
    return runs


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


def cpu_seconds(value: str) -> float | None:
    """sacct's TotalCPU: [D-][HH:]MM:SS[.mmm], e.g. 00:04.042 or 1-02:03:04."""
    days, _, rest = value.rpartition("-")
    try:
        parts = [float(part) for part in rest.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds + 86400 * int(days) if days.isdigit() else seconds


def _code_signal(value: str) -> tuple[int | None, int | None]:
    code, _, sig = value.partition(":")
    return (int(code) if code.isdigit() else None), (int(sig) if sig.isdigit() else None)


def _attempt(row: dict[str, str]) -> dict:
    """One job row of sacct -D: one attempt (a requeued job has one per run)."""
    code, sig = _code_signal(row["exit"])
    mem = row["req_mem"].rstrip("nc")  # older releases suffix per-node/per-CPU
    return {"state": row["state"].split()[0], "exit_code": code, "signal": sig,
            "elapsed_s": _int(row["elapsed"]), "cpu_time_s": _int(row["cpu_alloc"]),
            "total_cpu_s": cpu_seconds(row["cpu_used"]), "alloc_cpus": _int(row["cpus"]),
            "req_mem_mb": memory_mb(mem) or None, "max_rss_kb": None,
            "nodes": "" if row["nodes"] in ("", "None assigned") else row["nodes"],
            "start_time": cli_time(row["start"]), "end_time": cli_time(row["end"]), "step_signal": None}


def _add_step(attempt: dict, row: dict[str, str]) -> None:
    """MaxRSS lives on steps; so does the signal that ended a timed-out job (its job row says 0:0)."""
    rss_kb = _rss_kb(row["rss"])
    if rss_kb is not None and (attempt["max_rss_kb"] is None or rss_kb > attempt["max_rss_kb"]):
        attempt["max_rss_kb"] = rss_kb
    _, sig = _code_signal(row["exit"])
    if sig and (attempt["step_signal"] is None or row["id"].endswith(".batch")):
        attempt["step_signal"] = sig


def _record(job_id: int, attempts: list[dict]) -> AccountingRecord:
    last = attempts[-1]
    ran = [a for a in attempts if a["nodes"] or a["elapsed_s"]]
    shown = ran[-1] if ran and last not in ran else last
    code, signal = last["exit_code"], last["signal"]
    if not signal and not code and last["state"] != "COMPLETED":
        signal = last["step_signal"]
    if last is not shown:  # the last attempt never ran: it has no exit status of its own
        code, signal = None, None
    fields = {k: v for k, v in shown.items() if k not in {"state", "exit_code", "signal", "step_signal", "end_time"}}
    return AccountingRecord(job_id=job_id, state=last["state"], exit_code=code, signal=signal,
                            end_time=last["end_time"], attempts=len(attempts), **fields)


def accounting_from_sacct(text: str) -> list[AccountingRecord]:
    """Fold `sacct -D`'s attempts and steps into one record per job (see AccountingRecord)."""
    attempts: dict[int, list[dict]] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) != len(SACCT_COLUMNS) or not cols[0].split(".")[0].isdigit():
            continue
        row = dict(zip(SACCT_COLUMNS, cols, strict=True))
        runs = attempts.setdefault(int(row["id"].split(".")[0]), [])
        if "." not in row["id"]:
            runs.append(_attempt(row))
        elif runs:
            _add_step(runs[-1], row)
    return [_record(job_id, runs) for job_id, runs in attempts.items() if runs]


QUEUE_FORMAT = SEP.join(["%i", "%u", "%a", "%Q", "%r"])


def queue_from_squeue(text: str) -> list[QueuedJob]:
    """`squeue -o QUEUE_FORMAT` lines as QueuedJobs, in squeue's order."""
    jobs = []
    for line in text.splitlines():
        cols = line.split(SEP)
        if len(cols) == 5 and cols[0].isdigit():
            jobs.append(QueuedJob(job_id=int(cols[0]), user=cols[1], account=cols[2], priority=_int(cols[3]),
                                  reason="" if cols[4] == "None" else cols[4]))
    return jobs


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


def tres_dict(text: str) -> dict[str, str]:
    """sacctmgr's TRES list ("gres/gpu:h100=2,gres/gpu=4"; order not guaranteed) as a dict."""
    pairs = (item.partition("=") for item in text.split(",") if "=" in item)
    return {name: value for name, _, value in pairs}


def association_limits_from_sacctmgr(text: str) -> list[AssociationLimits]:
    """Rows of `sacctmgr -nP show assoc format=account,user,fairshare,grptres[,grptresrunmins,qos,defaultqos]`."""
    result = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and parts[0]:
            extra = parts[4:7] + [""] * (7 - len(parts))
            result.append(AssociationLimits(account=parts[0], user=parts[1], fairshare=parts[2],
                                            grp_tres=tres_dict(parts[3]), grp_tres_run_mins=tres_dict(extra[0]),
                                            qos=tuple(q for q in extra[1].split(",") if q), default_qos=extra[2]))
    return result


def qos_priorities_from_sacctmgr(text: str) -> dict[str, int]:
    """Rows of `sacctmgr -nP show qos format=name,priority`."""
    pairs = (line.split("|", 1) for line in text.splitlines() if "|" in line)
    return {name: int(value or 0) for name, value in pairs if name}


def pending_qos_from_squeue(text: str) -> list[PendingJobQos]:
    """Rows of `squeue -h -t PENDING -o %i|%a|%q`."""
    rows = (line.split("|") for line in text.splitlines())
    return [PendingJobQos(job_id=p[0], account=p[1], qos=p[2]) for p in rows if len(p) == 3 and p[0]]


def users_from_sacctmgr(text: str) -> dict[str, SlurmUser]:
    """Rows of `sacctmgr -nP show user [withcoord] format=user,defaultaccount[,coordinators]`."""
    result = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and parts[0]:
            coordinates = frozenset(a.strip() for a in parts[2].split(",") if a.strip()) if len(parts) > 2 \
                else frozenset()
            result[parts[0]] = SlurmUser(name=parts[0], default_account=parts[1], coordinates=coordinates)
    return result


_QUOTED = re.compile(r"\b(user|acct|name)\s*=\s*'([^']*)'")
_QUOTED_IN = re.compile(r"\b(user|acct|name)\s+in\s*\(([^)]*)\)")  # 24.11: name in('a','b')
# Transactions that never touch a coordinator row (checked on 22.05.8's log: removing users or
# accounts logs the coordinator rows it drops as "Remove Account Coords" of its own). Rights a
# coordinator holds over sub-accounts follow the tree, which the caller's full reads cover.
_NOT_COORD = ("Add Accounts", "Add Associations", "Add Users", "Modify Associations", "Modify Accounts",
              "Remove Associations",
              "Add QOS", "Modify QOS", "Remove QOS", "Add Clusters", "Modify Clusters", "Add TRES", "Add WCKeys",
              "Remove WCKeys", "Modify WCKeys", "Add Federations", "Modify Federations", "Add Reservation",
              "Modify Reservation", "Remove Reservation", "Add Resources", "Modify Resources")


def coordinator_changes(text: str) -> list[CoordinatorChange] | None:
    """Rows of `sacctmgr -nP show transaction format=action,where,info` as the coordinator rights
    they may have changed, one CoordinatorChange per row that may have: "Add Account Coord" names
    the user and the account; "Remove Account Coords" a user='..' or acct='..' condition (or both);
    removed or modified users and removed accounts count too. None for anything else that might
    touch coordinators, or a row it cannot read: the caller then reads them all."""
    changes = []
    for line in text.splitlines():
        # `where` may hold "||" itself (acct='a' || acct='b'); `info` never does.
        action, _, rest = line.partition("|")
        where, _, info = rest.rpartition("|")
        if not action or action in _NOT_COORD:
            continue
        if action.startswith("Add Account Coord"):
            changes.append(CoordinatorChange("add", _listed(where), _listed(info)))
            continue
        if not action.startswith(("Remove Account Coord", "Remove Users", "Modify Users", "Remove Accounts")):
            return None
        found = _QUOTED.findall(where) + [(key, value) for key, values in _QUOTED_IN.findall(where)
                                          for value in re.findall(r"'([^']*)'", values)]
        if not found:
            return None
        users = frozenset(v for k, v in found if k != "acct" and action != "Remove Accounts")
        accounts = frozenset(v for k, v in found if k == "acct" or action == "Remove Accounts")
        # Only a removal naming both sides is exactly "these users' rights on these accounts".
        kind = "remove" if action.startswith("Remove Account Coord") and users and accounts else "other"
        changes.append(CoordinatorChange(kind, users, accounts))
    return changes


def _listed(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def default_partition_from_scontrol(text: str) -> str | None:
    """The partition `scontrol show partition -o` marks Default=YES (one line per partition)."""
    for line in text.splitlines():
        fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
        if fields.get("Default") == "YES":
            return fields.get("PartitionName")
    return None


def descriptions_from_sacctmgr(text: str) -> dict[str, str]:
    """Rows of `sacctmgr -nP show account format=account,description`."""
    pairs = (line.split("|", 1) for line in text.splitlines() if "|" in line)
    return {account: description for account, description in pairs if account}



# `sshare -n -P -o` with these fields, in this order (fair_share_from_sshare reads them so).
SSHARE_FIELDS = "Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare,LevelFS"


def _share_number(value: str) -> float | None:
    """sshare's numbers: "0.250000", "inf" (LevelFS of an association with no usage), or
    nothing (a field Slurm does not fill for that row)."""
    try:
        return float(value)
    except ValueError:
        return None


def fair_share_from_sshare(text: str) -> list[FairShareRow]:
    """Rows of `sshare -n -P -o SSHARE_FIELDS`. sshare indents each level of the account tree
    with a space, so names are stripped; the root rows are left out (no team is root)."""
    rows = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) < 8 or not parts[0] or parts[0] == "root":
            continue
        raw_shares = int(parts[2]) if parts[2].isdigit() else None
        rows.append(FairShareRow(
            account=parts[0], user=parts[1], raw_shares=raw_shares, norm_shares=_share_number(parts[3]),
            raw_usage=int(parts[4]) if parts[4].isdigit() else 0, effective_usage=_share_number(parts[5]),
            fair_share=_share_number(parts[6]), level_fs=_share_number(parts[7])))
    return rows

# ---------------------------------------------------------------- hostlists and gres
#
# The one hostlist parser: every part of the portal that turns Slurm's compressed node lists
# ("gpu[01-03,07],cpu01") into names calls expand_hostlist, so they cannot disagree.

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_BRACKETS = re.compile(r"\[([^\]]*)\]")


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets: "gpu[01-02,05],cpu01" -> ["gpu[01-02,05]", "cpu01"]."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str) -> list[str]:
    names = []
    for item in spec.split(","):
        match = _RANGE.match(item.strip())
        if not match:
            return [f"[{spec}]"]  # not a hostlist range; keep it literal rather than guess
        low, high = match.group(1), match.group(2) or match.group(1)
        width = len(low)  # Slurm keeps the zero padding of the lower bound: gpu[01-10], gpu[098-101]
        names += [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
    return names


def _expand_one(pattern: str) -> list[str]:
    # Each bracket group multiplies out, text between and after them kept:
    # "r[1-2]n[01-02]" -> r1n01 r1n02 r2n01 r2n02; "gpu[01-02]-ib" -> gpu01-ib gpu02-ib.
    pieces = _BRACKETS.split(pattern)
    choices = [[piece] if i % 2 == 0 else _expand_range(piece) for i, piece in enumerate(pieces)]
    return ["".join(combo) for combo in product(*choices)]


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed node list as plain node names, in Slurm's order (as
    `scontrol show hostnames` prints them), without calling Slurm."""
    if not text or text in {"(null)", "None"}:
        return []
    return [name for part in _split_top(text) for name in _expand_one(part)]


__all__ = ["gpu_count", "gpu_type", "gpu_types"]
