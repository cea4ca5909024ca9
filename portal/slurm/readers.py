"""Fleet-read backends behind one interface, chosen by SLURM_READ_BACKEND.

`CliRestReader` (the default) reads the queue with a narrow `squeue` sweep and details,
nodes and partitions from slurmrestd. `PyslurmReader` reads through pyslurm's C bindings
where a matching pyslurm is installed (it must be built against the cluster's Slurm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from portal.slurm import parse, rest_versions
from portal.slurm.errors import SlurmNotFound, SlurmUnavailable
from portal.slurm.rest_versions import RestApi
from portal.slurm.types import JobInfo, NodeInfo, PartitionInfo


class FleetReader(Protocol):
    def list_jobs(self, *, job_ids: list[int] | None, users: list[str] | None) -> list[JobInfo]: ...
    def get_job(self, job_id: int) -> JobInfo: ...
    def list_nodes(self) -> list[NodeInfo]: ...
    def list_partitions(self) -> list[PartitionInfo]: ...


def _v38() -> RestApi:
    return rest_versions.for_version("v0.0.38")


class CliRestReader:
    def __init__(self, rest: Callable[..., dict | None], cli: Callable[[list[str]], str],
                 api: Callable[[], RestApi] = _v38):
        self._rest = rest
        self._cli = cli
        self._api = api  # the REST version `rest` speaks, which shapes its answers

    def list_jobs(self, *, job_ids: list[int] | None = None,
                  users: list[str] | None = None) -> list[JobInfo]:
        args = ["squeue", "-h", "-a", "-t", "all", "-o", parse.SQUEUE_FORMAT]
        if job_ids is not None:
            if not job_ids:
                return []
            args += ["-j", ",".join(str(int(j)) for j in job_ids)]
        if users:
            args += ["-u", ",".join(users)]
        try:
            return parse.jobs_from_squeue(self._cli(args))
        except SlurmNotFound:
            return []  # squeue -j with only unknown ids says "Invalid job id"

    def get_job(self, job_id: int) -> JobInfo:
        body = self._rest("GET", f"/job/{int(job_id)}") or {}
        jobs = body.get("jobs") or []
        if not jobs:
            raise SlurmNotFound(f"no job {job_id}")
        return self._api().job(jobs[0])

    def list_nodes(self) -> list[NodeInfo]:
        body = self._rest("GET", "/nodes") or {}
        return [self._api().node(n) for n in body.get("nodes") or []]

    def list_partitions(self) -> list[PartitionInfo]:
        body = self._rest("GET", "/partitions") or {}
        api = self._api()
        parts = [api.partition(p) for p in body.get("partitions") or []]
        if parts and not api.flags_default_partition:
            # One scontrol call, and cluster_info caches the result: without it a v0.0.40+
            # cluster would have no default partition, and the submit form would guess.
            default = parse.default_partition_from_scontrol(self._cli(["scontrol", "show", "partition", "-o"]))
            parts = [replace(p, is_default=p.name == default) for p in parts]
        return parts


class PyslurmReader:
    """Reads through pyslurm (API of pyslurm >= 23.2: Jobs/Nodes/Partitions collections)."""

    def __init__(self) -> None:
        try:
            import pyslurm  # noqa: PLC0415 - optional dependency, imported only when chosen
        except ImportError as exc:
            raise SlurmUnavailable(
                f"SLURM_READ_BACKEND=pyslurm but pyslurm cannot be imported: {exc}") from None
        self._pyslurm = pyslurm

    def list_jobs(self, *, job_ids: list[int] | None = None,
                  users: list[str] | None = None) -> list[JobInfo]:
        jobs = self._pyslurm.Jobs.load()
        selected = [j for j in jobs.values()
                    if (job_ids is None or j.id in job_ids) and (not users or j.user_name in users)]
        return [self._job(j) for j in selected]

    def get_job(self, job_id: int) -> JobInfo:
        try:
            return self._job(self._pyslurm.Job.load(int(job_id)))
        except self._pyslurm.RPCError as exc:
            raise SlurmNotFound(str(exc)) from None

    def list_nodes(self) -> list[NodeInfo]:
        return [self._node(n) for n in self._pyslurm.Nodes.load().values()]

    def list_partitions(self) -> list[PartitionInfo]:
        return [self._partition(p) for p in self._pyslurm.Partitions.load().values()]

    @staticmethod
    def _job(j) -> JobInfo:
        return parse.job_from_rest({
            "job_id": j.id, "name": j.name, "user_name": j.user_name, "account": j.account,
            "partition": j.partition, "job_state": j.state, "state_reason": j.state_reason,
            "nodes": j.nodes or "", "comment": j.comment or "", "restart_cnt": j.requeue_count,
            "standard_output": j.standard_output or "", "standard_error": j.standard_error or "",
            "current_working_directory": j.working_directory or "", "time_limit": j.time_limit,
            "exit_code": getattr(j.exit_code, "status", j.exit_code),
            "submit_time": j.submit_time, "start_time": j.start_time, "end_time": j.end_time,
        })

    @staticmethod
    def _node(n) -> NodeInfo:
        gres = ",".join(f"{k}:{v}" for k, v in (n.configured_gres or {}).items())
        used = ",".join(f"{k}:{v}" for k, v in (n.allocated_gres or {}).items())
        state, *flags = (n.state or "").split("+")
        return NodeInfo(name=n.name, state=state, flags=tuple(flags), reason=n.reason or "",
                        gres=gres, gres_used=used, cpus=n.total_cpus or 0,
                        alloc_cpus=n.allocated_cpus or 0, real_memory_mb=n.real_memory or 0,
                        partitions=tuple(n.partitions or ()))

    @staticmethod
    def _partition(p) -> PartitionInfo:
        return parse.partition_from_rest({
            "name": p.name, "nodes": p.nodes or "", "state": p.state,
            "flags": ["default"] if p.is_default else [], "max_time_limit": p.max_time,
            "total_nodes": p.total_nodes, "tres": "",
        })
