"""The Slurm gateway: the only code in the project that talks to Slurm.

Three kinds of call, each with its own identity:

* per-user actions (submit, cancel, hold, release, requeue) carry a short-lived JWT minted
  for that user, so Slurm itself decides what the user may do;
* fleet reads (jobs, nodes, partitions, accounting) run as the operator account;
* admin writes this REST version lacks (drain/resume, sacctmgr) run the CLI as the portal's
  own account, which the site makes a Slurm admin. They are idempotent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from portal.slurm import parse, tokens
from portal.slurm.errors import SlurmNotFound, SlurmRejected, TokenRefused
from portal.slurm.readers import CliRestReader, FleetReader, PyslurmReader
from portal.slurm.transport import SlurmAlreadyDone, rest_request, run_cli
from portal.slurm.types import (
    AccountingRecord,
    Association,
    JobInfo,
    JobSpec,
    NodeInfo,
    PartitionInfo,
    PriorityFactors,
    QueuedJob,
    QueueSweep,
)


@dataclass(frozen=True)
class _Conf:
    rest_url: str
    prefix: str
    key_file: str
    lifespan_s: int
    operator: str
    slurm_user: str
    timeout_s: float
    cli_timeout_s: float
    cli_runas: str
    cluster: str


def _conf() -> _Conf:
    s = settings.SLURM
    return _Conf(rest_url=s["REST_URL"], prefix=f"/slurm/{s['API_VERSION']}",
                 key_file=s["JWT_KEY_FILE"], lifespan_s=s["TOKEN_LIFESPAN_S"],
                 operator=s["OPERATOR_USER"], slurm_user=s["SLURM_USER"],
                 timeout_s=s["TIMEOUT_S"], cli_timeout_s=s["CLI_TIMEOUT_S"],
                 cli_runas=s["CLI_TOKEN_RUNAS"], cluster=s["CLUSTER"])


def user_token(username: str) -> str:
    """A JWT for an ordinary user; refused for root, SlurmUser and system accounts."""
    conf = _conf()
    tokens.check_user_may_act(username, slurm_user=conf.slurm_user)
    return tokens.mint(username, key_file=conf.key_file, lifespan_s=conf.lifespan_s)


def _as_user(method: str, path: str, username: str, **kwargs) -> dict | None:
    conf = _conf()
    return rest_request(method, conf.prefix + path, base_url=conf.rest_url, timeout=conf.timeout_s,
                        user=username, token=user_token(username), **kwargs)


def as_operator(method: str, path: str, **kwargs) -> dict | None:
    """A slurmrestd call as the operator account (fleet reads)."""
    conf = _conf()
    token = tokens.mint(conf.operator, key_file=conf.key_file, lifespan_s=conf.lifespan_s)
    return rest_request(method, conf.prefix + path, base_url=conf.rest_url, timeout=conf.timeout_s,
                        user=conf.operator, token=token, **kwargs)


def cli(args: list[str]) -> str:
    """An admin CLI call as the portal's own account."""
    return run_cli(args, timeout=_conf().cli_timeout_s)


# ---------------------------------------------------------------- per-user actions

def _submit_body(spec: JobSpec) -> dict:
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
    if spec.partition:
        job["partition"] = spec.partition
    if spec.mem_mb:
        job["memory_per_node"] = spec.mem_mb
    if spec.gpus_per_node:
        kind = f"gpu:{spec.gpu_type}" if spec.gpu_type else "gpu"
        job["gres"] = f"{kind}:{spec.gpus_per_node}"
    if spec.stdout:
        job["standard_output"] = spec.stdout
    if spec.stderr:
        job["standard_error"] = spec.stderr
    return {"job": job, "script": spec.script}


def submit_job(username: str, spec: JobSpec) -> int:
    """Submit as `username`; the job runs under that user's uid. Returns Slurm's job id."""
    body = _as_user("POST", "/job/submit", username, json=_submit_body(spec))
    job_id = (body or {}).get("job_id")
    if not isinstance(job_id, int):
        raise SlurmRejected("slurmrestd accepted the submission but returned no job id")
    return job_id


def cancel_job(username: str, job_id: int) -> None:
    """Cancel as `username`. Cancelling a job that already ended is a no-op."""
    try:
        _as_user("DELETE", f"/job/{int(job_id)}", username)
    except SlurmAlreadyDone:
        return


def _update_job(username: str, job_id: int, changes: dict) -> None:
    try:
        _as_user("POST", f"/job/{int(job_id)}", username, json=changes)
    except SlurmNotFound:
        # slurmrestd's own message here names only the RPC ("job update ... failed").
        raise SlurmNotFound(f"no job {int(job_id)} in Slurm") from None


def hold_job(username: str, job_id: int) -> None:
    _update_job(username, job_id, {"hold": True})


def release_job(username: str, job_id: int) -> None:
    _update_job(username, job_id, {"hold": False})


def requeue_job(username: str, job_id: int) -> None:
    """Requeue as `username`.

    REST v0.0.38 has no requeue, so scontrol runs with the user's JWT under an unprivileged
    uid: the token, not the process, is who Slurm sees, and Slurm checks ownership.
    """
    conf = _conf()
    token = user_token(username)
    run_cli(["scontrol", "requeue", str(int(job_id))], timeout=conf.cli_timeout_s,
            env={"SLURM_JWT": token}, user=conf.cli_runas)


# ---------------------------------------------------------------- fleet reads

def reader() -> FleetReader:
    if settings.SLURM["READ_BACKEND"] == "pyslurm":
        return PyslurmReader()
    return CliRestReader(as_operator, cli)


def jobs_changed_since(unix_time: int) -> bool:
    """True when anything in the queue changed since `unix_time` (a 304 costs almost nothing)."""
    return as_operator("GET", "/jobs", params={"update_time": int(unix_time)}) is not None


def sweep_jobs(*, skip_ended_before: datetime | None = None) -> QueueSweep:
    """Every job slurmctld holds (finished ones for MinJobAge too), with the tracker's fields.

    One squeue call: slurmctld answers one job-info RPC (squeue adds a small partition-info
    one), and the text costs several times less than JSON to make and to read. Jobs that
    ended before `skip_ended_before` are only counted (see parse.jobs_from_tracking_sweep).
    """
    out = cli(["squeue", "-h", "-a", "-t", "all", "-O", parse.TRACK_FORMAT])
    jobs, ids = parse.jobs_from_tracking_sweep(out, skip_ended_before=skip_ended_before)
    return QueueSweep(jobs=tuple(jobs), queued_ids=ids,
                      digest=hashlib.blake2b(out.encode(), digest_size=16).hexdigest())


def is_login_user(username: str) -> bool:
    """True for an ordinary login account: one the portal may act for and show jobs to."""
    try:
        tokens.check_user_may_act(username, slurm_user=_conf().slurm_user)
    except TokenRefused:
        return False
    return True


def list_jobs(*, job_ids: list[int] | None = None, users: list[str] | None = None) -> list[JobInfo]:
    return reader().list_jobs(job_ids=job_ids, users=users)


def get_job(job_id: int) -> JobInfo:
    return reader().get_job(int(job_id))


def list_nodes() -> list[NodeInfo]:
    return reader().list_nodes()


def get_node(name: str) -> NodeInfo:
    for node in list_nodes():
        if node.name == name:
            return node
    raise SlurmNotFound(f"no node named {name!r}")


def list_partitions() -> list[PartitionInfo]:
    return reader().list_partitions()


def accounting(job_ids: list[int]) -> list[AccountingRecord]:
    """sacct rows for finished or running jobs; unknown ids are simply absent."""
    if not job_ids:
        return []
    # -D: every attempt of a requeued job, so one cancelled while waiting again still shows where it ran.
    out = cli(["sacct", "-a", "-n", "-P", "-D", "-j", ",".join(str(int(j)) for j in job_ids),
               "-o", parse.SACCT_FIELDS])
    return parse.accounting_from_sacct(out)


def find_jobs_by_comment(comments: Collection[str], *, submitted_after: datetime) -> dict[str, int]:
    """Slurm ids of the jobs carrying these comments: queued or recently ended ones (squeue),
    then ones slurmctld already purged (sacct, which keeps comments where the cluster sets
    AccountingStoreFlags=job_comment). Neither can filter by comment, so both list ids and
    comments, sacct only from `submitted_after` on. A job id that is not a plain number (an
    array task) is no portal job."""
    wanted, found = set(comments), {}
    _collect_comments(cli(["squeue", "-h", "-a", "-t", "all", "-o", f"%i{parse.SEP}%k"]), parse.SEP,
                      wanted, found)
    if wanted - found.keys():
        since = submitted_after.astimezone().strftime("%Y-%m-%dT%H:%M:%S")  # sacct reads local time
        _collect_comments(cli(["sacct", "-a", "-X", "-n", "-P", "-S", since, "-o", "JobIDRaw,Comment"]), "|",
                          wanted, found)
    return found


def _collect_comments(text: str, sep: str, wanted: set[str], found: dict[str, int]) -> None:
    for line in text.splitlines():
        raw_id, _, comment = line.partition(sep)
        if comment in wanted and raw_id.isdigit():
            found.setdefault(comment, int(raw_id))


def job_priority(job_id: int) -> PriorityFactors | None:
    """Why a pending job is where it is in the queue; None when Slurm has no factors for it."""
    try:
        out = cli(["sprio", "-h", "-n", "-j", str(int(job_id)), "-o", "%i|%Y|%A|%F|%J|%P|%Q"])
    except (SlurmNotFound, SlurmRejected):
        return None  # held or no longer pending: sprio says it cannot find the job
    return parse.priority_from_sprio(out)


def pending_queue(partition: str) -> list[QueuedJob]:
    """A partition's waiting jobs in the order Slurm considers them: highest priority first,
    then the older job id (the scheduler's own tie-break)."""
    args = ["squeue", "-h", "-t", "PENDING", "-S", "-p,i", "-o", parse.QUEUE_FORMAT]
    return parse.queue_from_squeue(cli([*args, "-p", partition] if partition else args))


def ping() -> float:
    """Seconds a slurmrestd round trip takes; raises SlurmUnavailable when it cannot."""
    started = time.monotonic()
    as_operator("GET", "/ping")
    return time.monotonic() - started


# ---------------------------------------------------------------- admin writes

def drain_node(name: str, reason: str) -> None:
    """Drain a node (idempotent: draining a drained node just updates the reason)."""
    if not reason.strip():
        raise SlurmRejected("a drain needs a reason")
    cli(["scontrol", "update", f"nodename={name}", "state=drain", f"reason={reason}"])


def resume_node(name: str) -> None:
    """Return a node to service. A node that is not drained or down is left as it is."""
    node = get_node(name)
    if not node.drained and node.state not in {"DOWN", "FAIL"}:
        return
    cli(["scontrol", "update", f"nodename={name}", "state=resume"])


def _sacctmgr(*args: str) -> None:
    try:
        cli(["sacctmgr", "-i", *args])
    except SlurmRejected as exc:
        # "Already exists" and "nothing to change" mean the desired state holds: success.
        if "already exist" in exc.message or "Nothing new added" in exc.message \
                or "Nothing modified" in exc.message:
            return
        raise


def list_associations() -> list[Association]:
    out = cli(["sacctmgr", "-n", "-P", "show", "associations",
               f"cluster={_conf().cluster}", "format=account,user"])
    return parse.associations_from_sacctmgr(out)


def list_coordinators() -> set[tuple[str, str]]:
    """(user, account) pairs of Slurm account coordinators."""
    out = cli(["sacctmgr", "-n", "-P", "show", "account", "withcoord", "format=account,coordinators"])
    pairs = set()
    for line in out.splitlines():
        account, _, users = line.partition("|")
        pairs |= {(user.strip(), account) for user in users.split(",") if user.strip()}
    return pairs


def ensure_account(name: str, *, description: str = "") -> None:
    _sacctmgr("add", "account", name, f"description={description or name}",
              f"organization={name}", f"cluster={_conf().cluster}")


def ensure_association(user: str, account: str) -> None:
    _sacctmgr("add", "user", user, f"account={account}", f"cluster={_conf().cluster}")


def ensure_coordinator(user: str, account: str) -> None:
    _sacctmgr("add", "coordinator", f"account={account}", f"names={user}")


def remove_association(user: str, account: str) -> None:
    try:
        _sacctmgr("remove", "user", user, "where", f"account={account}",
                  f"cluster={_conf().cluster}")
    except SlurmRejected as exc:
        if "Nothing deleted" not in exc.message:
            raise
