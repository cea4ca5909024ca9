"""Every slurmrestd API version the gateway speaks, and the one place their shapes differ.

The gateway asks `for_version(v)` (or the negotiated one) for a `RestApi` and hands it Slurm's
JSON; what comes back is always the shapes of portal/slurm/types.py. Nothing else in the
project sees a version-specific body.

* v0.0.38 (Slurm 22.05, 23.02): the shapes parse.py was written for, used unchanged: its
  requests and results are exactly those of the gateway before versions were negotiated.
* v0.0.40 and later (23.11 onwards): numbers come as {"set", "infinite", "number"} objects,
  `job_state` and a node's `state` are lists (base state first, then flags), `exit_code` is an
  object, `environment` is a list of "K=V" strings, GPUs are asked for with `tres_per_node`,
  and a partition is a tree of sub-objects. Each is turned into the v0.0.38 form first and then
  parsed by the same parse.py functions, so a job reads the same whichever API returned it.

Checked against real daemons (recorded under tests/slurm/recorded/): 22.05.8 (v0.0.38) and
24.11.5 (v0.0.40, v0.0.41, v0.0.42); 26.05.5 lists v0.0.42-v0.0.45, of which v0.0.43 and
v0.0.44 use the v0.0.42 shapes here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from portal.slurm import parse
from portal.slurm.errors import SlurmUnavailable
from portal.slurm.transport import raise_for_errors
from portal.slurm.types import JobDetail, JobInfo, JobSpec, NodeInfo, PartitionInfo

SUPPORTED = ("v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44")
_SLURMCTLD_PATH = re.compile(r"^/slurm/(v\d+\.\d+\.\d+)/")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


def listed_versions(openapi: dict) -> list[str]:
    """The slurmctld API versions a `GET /openapi/v3` document serves (its /slurm/vX/ paths;
    /slurmdb/ ones are a separate plugin the gateway does not use), oldest first."""
    found = {m.group(1) for path in (openapi.get("paths") or {}) if (m := _SLURMCTLD_PATH.match(path))}
    return sorted(found, key=_key)


def choose(listed: Iterable[str], supported: Iterable[str] = SUPPORTED) -> str:
    """The highest version both sides know."""
    common = set(listed) & set(supported)
    if not common:
        raise SlurmUnavailable(
            f"slurmrestd serves {sorted(set(listed), key=_key) or 'no slurmctld API'}; the portal speaks "
            f"{', '.join(supported)}: no version in common")
    return max(common, key=_key)


def for_version(version: str) -> RestApi:
    if version == "v0.0.38":
        return RestApi(version)
    if version in SUPPORTED:
        return RestApi4x(version)
    raise SlurmUnavailable(f"slurmrestd API {version!r} is not one the portal speaks ({', '.join(SUPPORTED)})")


def _optional_fields(spec: JobSpec, *, memory: Any) -> dict:
    """The submit fields every version sends only when set; `memory` in the version's form."""
    fields = {"partition": spec.partition, "memory_per_node": memory if spec.mem_mb else None,
              "standard_output": spec.stdout, "standard_error": spec.stderr}
    return {key: value for key, value in fields.items() if value}


class RestApi:
    """v0.0.38: Slurm 22.05 and 23.02."""

    # Whether cancel goes through DELETE /job/{id}. On 24.11.5 and 26.05.5 a DELETE that Slurm
    # refuses (bob cancelling alice's job) left slurmctld unable to answer job reads until it
    # was restarted (seen three times); that release's scancel, with the user's JWT, refuses
    # the same cleanly.
    cancels_over_rest = True
    # Whether partition_info flags the default partition. v0.0.40+ (checked on 24.11.5 and
    # 26.05.5) has no such field; the reader then asks scontrol which one it is.
    flags_default_partition = True

    def __init__(self, version: str) -> None:
        self.version = version
        self.prefix = f"/slurm/{version}"

    def __repr__(self) -> str:
        return f"<slurmrestd API {self.version}>"

    # ---- requests

    def submit_body(self, spec: JobSpec) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **spec.environment}
        job: dict = {
            "name": spec.name, "account": spec.account, "current_working_directory": spec.working_dir,
            # v0.0.38 parses these keys like sbatch's options: "requeue": false is read as the
            # flag --requeue and ignored (Requeue=1); the opposite flag is "no_requeue".
            "environment": env, "requeue" if spec.requeue else "no_requeue": True,
            "time_limit": spec.time_limit_min,
            # The schema's [min, max] list is accepted and ignored (NumNodes=1); a "min-max"
            # string is parsed like sbatch -N and pins both ends.
            "nodes": f"{spec.nodes}-{spec.nodes}", "cpus_per_task": spec.cpus_per_task,
            "comment": spec.comment, "hold": spec.hold,
        }
        job.update(_optional_fields(spec, memory=spec.mem_mb))
        if spec.gpus_per_node:
            kind = f"gpu:{spec.gpu_type}" if spec.gpu_type else "gpu"
            job["gres"] = f"{kind}:{spec.gpus_per_node}"
        return {"job": job, "script": spec.script}

    def hold_body(self, hold: bool) -> dict:
        return {"hold": hold}

    def raise_for_signal_status(self, body: dict) -> None:
        """v0.0.38 reports a failed cancel in `errors`, which the transport already raised."""

    def jobs_probe_params(self, unix_time: int) -> dict | None:
        """Query parameters for the cheap "anything changed?" read, or None when this API
        version cannot answer it cheaply (the caller then assumes something changed)."""
        return {"update_time": int(unix_time)}

    def jobs_changed(self, body: dict | None) -> bool:
        return body is not None  # 304 Not Modified (no body) when nothing changed

    # ---- results: the v0.0.38 form, parsed by parse.py

    def job_id_of_submit(self, body: dict) -> Any:
        return body.get("job_id")

    def job(self, data: dict) -> JobInfo:
        return parse.job_from_rest(self.job_v38(data))

    def job_detail(self, data: dict) -> JobDetail:
        return parse.job_detail_from_rest(self.job_v38(data))

    def node(self, data: dict) -> NodeInfo:
        return parse.node_from_rest(self.node_v38(data))

    def partition(self, data: dict) -> PartitionInfo:
        return parse.partition_from_rest(self.partition_v38(data))

    def node_address(self, data: dict) -> tuple[Any, Any]:
        return data.get("address"), data.get("port")

    def job_v38(self, data: dict) -> dict:
        return data

    def node_v38(self, data: dict) -> dict:
        return data

    def partition_v38(self, data: dict) -> dict:
        return data


def number(value: Any) -> int | None:
    """A v0.0.40+ number: {"set": true, "number": N} is N; unset or infinite is None. Plain
    integers (fields that never had the object form) pass through."""
    if isinstance(value, dict):
        if not value.get("set") or value.get("infinite"):
            return None
        return int(value.get("number") or 0)
    return value if isinstance(value, int) else None


def _base_and_flags(states: Any) -> tuple[str, list[str]]:
    """["PENDING", "REQUEUED"] -> ("PENDING", ["REQUEUED"]): Slurm lists the base state first."""
    if isinstance(states, str):
        return states, []
    states = [str(s) for s in states or []]
    return (states[0], states[1:]) if states else ("", [])


# The flags v0.0.38 (and squeue's %T) named instead of the base state, in Slurm's own order
# (job_state_string): a requeued job still being cleaned up was "COMPLETING" there, while
# v0.0.40+ lists ["PENDING", "COMPLETING"]. Read as "PENDING", the recovery placed the job
# too early and Slurm's ~120 s requeue delay, set when the cleanup ends, stood.
_STATE_FLAGS_FIRST = ("COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED", "REQUEUE_FED",
                      "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING",
                      "EXPEDITING")


def job_state_v38(states: Any) -> str:
    """A v0.0.40+ job_state list as v0.0.38's one word."""
    base, flags = _base_and_flags(states)
    return next((flag for flag in _STATE_FLAGS_FIRST if flag in flags), base)


def wait_status(exit_code: Any) -> int | None:
    """A v0.0.40+ exit_code object as the raw wait status v0.0.38 gave (signal, or code << 8)."""
    if isinstance(exit_code, int):
        return exit_code
    if not isinstance(exit_code, dict):
        return None
    signal = number((exit_code.get("signal") or {}).get("id"))
    if signal:
        return signal & 0x7F
    code = number(exit_code.get("return_code"))
    return None if code is None else (code & 0xFF) << 8


_JOB_NUMBERS = ("submit_time", "start_time", "end_time", "eligible_time", "time_limit", "priority")


class RestApi4x(RestApi):
    """v0.0.40 to v0.0.44: Slurm 23.11 to 26.05."""

    cancels_over_rest = False
    flags_default_partition = False

    def submit_body(self, spec: JobSpec) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **spec.environment}
        job: dict = {
            "name": spec.name, "account": spec.account, "current_working_directory": spec.working_dir,
            "environment": [f"{k}={v}" for k, v in env.items()],
            # A real boolean here (v0.0.38 read it as a flag, hence "no_requeue" there).
            "requeue": spec.requeue,
            # v0.0.40 warns about plain integers where its schema has a number object.
            "time_limit": _set(spec.time_limit_min),
            "nodes": f"{spec.nodes}-{spec.nodes}", "cpus_per_task": spec.cpus_per_task,
            "comment": spec.comment, "hold": spec.hold, "script": spec.script,
        }
        job.update(_optional_fields(spec, memory=_set(spec.mem_mb) if spec.mem_mb else None))
        if spec.gpus_per_node:
            # No `gres` key after v0.0.38: GPUs are TRES per node.
            kind = f"gres/gpu:{spec.gpu_type}" if spec.gpu_type else "gres/gpu"
            job["tres_per_node"] = f"{kind}:{spec.gpus_per_node}"
        # The top-level "script" is deprecated from v0.0.40 on: it lives in the job.
        return {"job": job}

    def raise_for_signal_status(self, body: dict) -> None:
        # v0.0.42+ answers a DELETE with 200 and one `status` entry per job, whose error says
        # what went wrong: 2021 already finished (a no-op to callers), 2017 no such job.
        # v0.0.40/41 answer 200 with nothing for an unknown job (checked on 24.11): no error.
        errors = [{"error_number": (s.get("error") or {}).get("code") or 0,
                   "description": (s.get("error") or {}).get("message") or ""}
                  for s in body.get("status") or [] if (s.get("error") or {}).get("code")]
        if errors:
            raise_for_errors(errors)

    def jobs_probe_params(self, unix_time: int) -> dict | None:
        if self.version in ("v0.0.40", "v0.0.41"):
            # Slurm 24.11 rejects every update_time for these two (error 9202 "Parsing of
            # <n> for timestamp failed"), so there is no cheap probe: always read.
            return None
        return {"update_time": int(unix_time)}

    def jobs_changed(self, body: dict | None) -> bool:
        # v0.0.42+ answers 200 with no jobs and a warning "No job changes since update_time[...]"
        # instead of v0.0.38's 304. An empty list without that warning is a change (all jobs gone).
        if body is None:
            return False
        quiet = any(str(w.get("description", "")).startswith("No job changes since")
                    for w in body.get("warnings") or [])
        return not (quiet and not body.get("jobs"))

    def job_v38(self, data: dict) -> dict:
        out = {**data, "job_state": job_state_v38(data.get("job_state"))}
        for key in _JOB_NUMBERS:
            if key in data:
                out[key] = number(data[key])
        out["exit_code"] = wait_status(data.get("exit_code"))
        for key in ("standard_output", "standard_error"):
            if data.get(key):
                out[key] = _output_path(data[key], data)
        return out

    def node_v38(self, data: dict) -> dict:
        state, flags = _base_and_flags(data.get("state"))
        return {**data, "state": state, "state_flags": flags}

    def partition_v38(self, data: dict) -> dict:
        nodes = data.get("nodes") or {}
        state, _flags = _base_and_flags((data.get("partition") or {}).get("state"))
        max_time = (data.get("maximums") or {}).get("time")
        return {
            "name": data["name"], "nodes": nodes.get("configured", ""), "total_nodes": nodes.get("total"),
            "state": state, "tres": (data.get("tres") or {}).get("configured", ""),
            "max_time_limit": number(max_time),
            # No Default flag from v0.0.40 on: the reader fills it in from scontrol
            # (flags_default_partition).
            "flags": [],
        }


def _output_path(value: str, data: dict) -> str:
    """v0.0.43+ (26.05) gives the output path as submitted ("slurm-%j.out", relative to the
    working directory); v0.0.38-v0.0.42 gave it filled in and absolute, as scontrol shows it."""
    if "%" in value:
        value = parse.expand_output_path(value, job_id=int(data["job_id"]), user=data.get("user_name", ""),
                                         name=data.get("name", ""))
    cwd = data.get("current_working_directory") or ""
    if cwd and not value.startswith("/"):
        value = f"{cwd.rstrip('/')}/{value}"
    return value


def _set(value: int) -> dict:
    return {"set": True, "infinite": False, "number": int(value)}
