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
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from portal.slurm import parse, rest_versions, tokens
from portal.slurm.errors import SlurmNotFound, SlurmRejected, TokenRefused
from portal.slurm.readers import CliRestReader, FleetReader, PyslurmReader
from portal.slurm.rest_versions import RestApi
from portal.slurm.transport import SlurmAlreadyDone, rest_request, run_cli
from portal.slurm.types import (
    AccountingRecord,
    AccountsState,
    Association,
    CoordinatorChange,
    FairShareRow,
    JobDetail,
    JobInfo,
    JobSpec,
    NodeInfo,
    PartitionInfo,
    PendingJobQos,
    PriorityFactors,
    QueuedJob,
    QueueSweep,
    RunRecord,
    SlurmUser,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Conf:
    rest_url: str
    api_version: str
    key_file: str
    lifespan_s: int
    operator: str
    slurm_user: str
    timeout_s: float
    cli_timeout_s: float
    cli_runas: str
    cluster: str
    cli_root: str


def _conf() -> _Conf:
    s = settings.SLURM
    return _Conf(rest_url=s["REST_URL"], api_version=s["API_VERSION"],
                 key_file=s["JWT_KEY_FILE"], lifespan_s=s["TOKEN_LIFESPAN_S"],
                 operator=s["OPERATOR_USER"], slurm_user=s["SLURM_USER"],
                 timeout_s=s["TIMEOUT_S"], cli_timeout_s=s["CLI_TIMEOUT_S"],
                 cli_runas=s["CLI_TOKEN_RUNAS"], cluster=s["CLUSTER"], cli_root=s["CLI_ROOT"])


def cluster_name() -> str:
    return _conf().cluster


def user_token(username: str) -> str:
    """A JWT for an ordinary user; refused for root, SlurmUser and system accounts."""
    conf = _conf()
    tokens.check_user_may_act(username, slurm_user=conf.slurm_user)
    return tokens.mint(username, key_file=conf.key_file, lifespan_s=conf.lifespan_s)


# ---------------------------------------------------------------- REST API version

_negotiated: dict[str, RestApi] = {}
_negotiation_lock = threading.Lock()


def rest_api() -> RestApi:
    """The slurmrestd API version this process speaks: SLURM_API_VERSION when it names one,
    else (the default, "auto") the highest both sides know, asked once per process.

    The answer is kept for the process, not per URL: it is a property of the cluster, and a
    process that points REST_URL elsewhere (a test's proxy in front of the same slurmrestd)
    must not ask again through it. A failed negotiation is not kept, so the next call retries,
    and it raises the same typed errors as any request (unreachable, unavailable).
    """
    conf = _conf()
    if conf.api_version != "auto":
        return rest_versions.for_version(conf.api_version)
    with _negotiation_lock:
        if "auto" not in _negotiated:
            _negotiated["auto"] = _negotiate(conf)
        return _negotiated["auto"]


def _negotiate(conf: _Conf) -> RestApi:
    token = tokens.mint(conf.operator, key_file=conf.key_file, lifespan_s=conf.lifespan_s)
    doc = rest_request("GET", "/openapi/v3", base_url=conf.rest_url, timeout=conf.timeout_s,
                       user=conf.operator, token=token) or {}
    listed = rest_versions.listed_versions(doc)
    chosen = rest_versions.choose(listed)
    log.info("slurmrestd at %s serves %s; the portal speaks %s: using %s", conf.rest_url,
             ", ".join(listed), ", ".join(rest_versions.SUPPORTED), chosen)
    return rest_versions.for_version(chosen)


def forget_negotiated_version() -> None:
    """Ask slurmrestd again on the next call (tests that switch clusters)."""
    with _negotiation_lock:
        _negotiated.clear()


def _as_user(method: str, path: str, username: str, *,
             body: Callable[[RestApi], dict] | None = None, **kwargs) -> dict | None:
    """A slurmrestd call as `username`; `body` builds the JSON in the negotiated version's shape.
    The user is checked before anything is sent, the version asked for only then."""
    conf = _conf()
    token = user_token(username)
    api = rest_api()
    if body is not None:
        kwargs["json"] = body(api)
    return rest_request(method, api.prefix + path, base_url=conf.rest_url, timeout=conf.timeout_s,
                        user=username, token=token, **kwargs)


def as_operator(method: str, path: str, **kwargs) -> dict | None:
    """A slurmrestd call as the operator account (fleet reads)."""
    conf = _conf()
    token = tokens.mint(conf.operator, key_file=conf.key_file, lifespan_s=conf.lifespan_s)
    return rest_request(method, rest_api().prefix + path, base_url=conf.rest_url, timeout=conf.timeout_s,
                        user=conf.operator, token=token, **kwargs)


def cli(args: list[str]) -> str:
    """An admin CLI call as the portal's own account."""
    conf = _conf()
    return run_cli(args, timeout=conf.cli_timeout_s, root=conf.cli_root)


# ---------------------------------------------------------------- per-user actions

def submit_job(username: str, spec: JobSpec) -> int:
    """Submit as `username`; the job runs under that user's uid. Returns Slurm's job id."""
    body = _as_user("POST", "/job/submit", username, body=lambda api: api.submit_body(spec))
    job_id = rest_api().job_id_of_submit(body or {})
    if not isinstance(job_id, int):
        raise SlurmRejected("slurmrestd accepted the submission but returned no job id")
    return job_id


def cancel_job(username: str, job_id: int) -> None:
    """Cancel as `username`. Cancelling a job that already ended is a no-op."""
    tokens.check_user_may_act(username, slurm_user=_conf().slurm_user)  # before anything is sent
    api = rest_api()
    try:
        if api.cancels_over_rest:
            body = _as_user("DELETE", f"/job/{int(job_id)}", username)
            api.raise_for_signal_status(body or {})
        else:
            _as_user_cli(["scancel", str(int(job_id))], username)
    except SlurmAlreadyDone:
        return


def _as_user_cli(args: list[str], username: str) -> str:
    """A Slurm command with the user's JWT under an unprivileged uid: the token, not the
    process, is who Slurm sees, and Slurm checks ownership."""
    conf = _conf()
    token = user_token(username)
    return run_cli(args, timeout=conf.cli_timeout_s, env={"SLURM_JWT": token}, user=conf.cli_runas,
                   root=conf.cli_root)


def _update_job(username: str, job_id: int, changes: Callable[[RestApi], dict]) -> None:
    try:
        _as_user("POST", f"/job/{int(job_id)}", username, body=changes)
    except SlurmNotFound:
        # slurmrestd's own message here names only the RPC ("job update ... failed").
        raise SlurmNotFound(f"no job {int(job_id)} in Slurm") from None


def hold_job(username: str, job_id: int) -> None:
    _update_job(username, job_id, lambda api: api.hold_body(True))


def release_job(username: str, job_id: int) -> None:
    _update_job(username, job_id, lambda api: api.hold_body(False))


def requeue_job(username: str, job_id: int) -> None:
    """Requeue as `username` (REST v0.0.38 has no requeue: scontrol with the user's JWT)."""
    _as_user_cli(["scontrol", "requeue", str(int(job_id))], username)


# ---------------------------------------------------------------- fleet reads

def reader() -> FleetReader:
    if settings.SLURM["READ_BACKEND"] == "pyslurm":
        return PyslurmReader()
    return CliRestReader(as_operator, cli, rest_api)


def jobs_changed_since(unix_time: int) -> bool:
    """True when anything in the queue changed since `unix_time` (a 304 costs almost nothing).
    An API version without a working probe always says True: the caller then sweeps."""
    api = rest_api()
    params = api.jobs_probe_params(int(unix_time))
    if params is None:
        return True
    return api.jobs_changed(as_operator("GET", "/jobs", params=params))


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
    resume_if_out(name, get_node(name))


def _out_of_service(node: NodeInfo) -> bool:
    return node.drained or node.state in {"DOWN", "FAIL"}


def resume_if_out(name: str, seen: NodeInfo) -> None:
    """Resume a node that `seen` (read a moment ago) shows out of service. Two resumes may race
    between their read and their update (the worker runs two policy tasks at once); Slurm then
    refuses the second ("Invalid node state specified"), which is success all the same."""
    if not _out_of_service(seen):
        return
    try:
        cli(["scontrol", "update", f"nodename={name}", "state=resume"])
    except SlurmRejected:
        if _out_of_service(get_node(name)):
            raise


def down_node(name: str, reason: str) -> None:
    """Mark a node DOWN (idempotent). Slurm requeues its --requeue jobs at once and ends the
    others NODE_FAIL; with ReturnToService=2 the node returns by itself when its slurmd
    registers again."""
    if not reason.strip():
        raise SlurmRejected("marking a node down needs a reason")
    cli(["scontrol", "update", f"nodename={name}", "state=down", f"reason={reason}"])


def running_job_ids(node: str) -> list[int]:
    """Ids of the jobs Slurm shows RUNNING on a node (batch jobs and allocations alike)."""
    out = cli(["squeue", "-h", "-w", node, "-t", "RUNNING", "-o", "%i"])
    return [int(j) for j in out.split() if j.isdigit()]


def start_now_if_delayed(job_id: int) -> bool:
    """Make a job Slurm just requeued for a node failure eligible at once: Slurm 22.05 gives it
    121 s of BeginTime (its reason reads "None" for a moment first, so only the state is asked;
    the job already started once, so no --begin of the user's is still ahead). True when done."""
    if cli(["squeue", "-h", "-j", str(int(job_id)), "-o", "%T"]).strip() != "PENDING":
        return False
    cli(["scontrol", "update", f"jobid={int(job_id)}", "StartTime=now"])
    return True


def slurmd_address(name: str) -> tuple[str, int]:
    """Where the node's slurmd listens (NodeAddr, Port), as slurmctld knows it."""
    data = as_operator("GET", f"/node/{name}") or {}
    nodes = data.get("nodes") or []
    address, port = rest_api().node_address(nodes[0]) if nodes else (None, None)
    if not address or not port:
        raise SlurmNotFound(f"no address for node {name!r}")
    return str(address), int(port)


def _slurmd_answers_once(address: tuple[str, int], timeout_s: float) -> bool:
    # Connect, then half-close: a live slurmd reads an empty message, gives up and closes at
    # once (EOF). A dead one refuses the connection; a stopped or wedged one accepts (the
    # kernel does that) but never closes, so the wait for EOF times out. A bare connect would
    # call a wedged slurmd alive.
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(256):
                pass
            return True
    except OSError:  # refused, reset, unreachable or timed out
        return False


def slurmd_answers(name: str, *, timeout_s: float = 1.5, tries: int = 2) -> bool:
    """True when the node's slurmd answers on its port in any of `tries` probes (a pause
    between them, so one dropped packet or a busy host is not a dead slurmd)."""
    address = slurmd_address(name)
    for attempt in range(tries):
        if attempt:
            time.sleep(0.2)
        if _slurmd_answers_once(address, timeout_s):
            return True
    return False

# ---------------------------------------------------------------- recovery (operator)
# The worker's own requeues (portal/recovery): not a user's action but the site's, so they run
# as the portal's admin account, for portal and sbatch jobs alike. Each is safe to repeat: the
# caller reads job_detail() first and again after, and acts only on what differs.

def job_detail(job_id: int) -> JobDetail:
    """Placement, hold and eligibility of one job as slurmctld holds them now."""
    body = as_operator("GET", f"/job/{int(job_id)}") or {}
    jobs = body.get("jobs") or []
    if not jobs:
        raise SlurmNotFound(f"no job {int(job_id)} in Slurm")
    return rest_api().job_detail(jobs[0])


def jobs_on_node(name: str) -> list[JobInfo]:
    """Jobs holding `name` now (running, starting or finishing), with the tracker's fields."""
    out = cli(["squeue", "-h", "-a", "-w", name, "-t", "RUNNING,CONFIGURING,COMPLETING", "-O", parse.TRACK_FORMAT])
    jobs, _ = parse.jobs_from_tracking_sweep(out)
    return jobs


def requeue_job_now(job_id: int, *, hold: bool = False) -> None:
    """`scontrol requeue` (or requeuehold) a running or ended job. Slurm refuses a pending job
    ("Job is pending execution"): the caller reads job_detail() first."""
    cli(["scontrol", "requeuehold" if hold else "requeue", str(int(job_id))])


def hold_job_now(job_id: int, note: str) -> None:
    """Hold a pending job (Priority=0) and say why in its AdminComment, which `scontrol show
    job` and the portal show. A user hold (`uhold`, Reason=JobHeldUser), like `requeuehold`'s:
    its owner may release it once the cause is fixed (Slurm refuses them an admin hold)."""
    cli(["scontrol", "uhold", str(int(job_id))])
    cli(["scontrol", "update", f"jobid={int(job_id)}", f"AdminComment={note[:250]}"])


def release_job_now(job_id: int) -> None:
    cli(["scontrol", "release", str(int(job_id))])


def place_requeued_job(job_id: int, *, exclude: str, required: str | None, start: datetime | None) -> None:
    """Point a requeued (pending) job away from failed nodes and let it start at `start` (None:
    now) instead of the ~120 s Slurm adds after a requeue. `required` replaces ReqNodeList when
    given ("" clears it): a node that is both required and excluded would keep the job waiting
    forever (Reason=BadConstraints)."""
    when = "now" if start is None else start.astimezone().strftime("%Y-%m-%dT%H:%M:%S")  # scontrol reads local time
    args = ["scontrol", "update", f"jobid={int(job_id)}"]
    if required is not None:
        args.append(f"ReqNodeList={required}")
    cli([*args, f"ExcNodeList={exclude}", f"StartTime={when}"])


def job_runs(job_ids: list[int], *, since: datetime | None = None) -> dict[int, list[RunRecord]]:
    """Every run of each job (sacct -D -X), oldest first; jobs sacct does not know are absent.

    `since` (the jobs' earliest submit): accounting keeps every job a cluster ever ran, and a
    cluster whose ids restarted (a wiped state) has older jobs under the same ids; -S leaves
    those out (checked: an old job with the id is listed without it, not with it)."""
    if not job_ids:
        return {}
    window = ["-S", since.astimezone().strftime("%Y-%m-%dT%H:%M:%S")] if since else []   # sacct reads local time
    out = cli(["sacct", "-a", "-n", "-P", "-D", "-X", *window, "-j", ",".join(str(int(j)) for j in job_ids),
               "-o", parse.RUN_FIELDS])
    return parse.runs_from_sacct(out)


# sacctmgr's words for "the desired state already holds", lower-cased: 22.05 says "already
# exists" and "Nothing new added"; 24.11 "Already existing account ..." and "Nothing added".
_SACCTMGR_NOOPS = ("already exist", "nothing new added", "nothing added", "nothing modified",
                   "request didn't affect anything")


# 24.11 leaves out what a batch names but Slurm lacks, says so and exits 0 ("No account qt-x on
# cluster portal, skipping."); 22.05 refused the whole call. Either way that part was not done.
_SACCTMGR_SKIPPED = re.compile(r"^\s*(No \S+ \S+ on cluster \S+, skipping\.?)\s*$", re.MULTILINE)


def _sacctmgr(*args: str) -> None:
    try:
        out = cli(["sacctmgr", "-i", *args])
    except SlurmRejected as exc:
        # 24.11 ends a refusal for a missing account with "Nothing added." too: skips first.
        skipped = _SACCTMGR_SKIPPED.findall(exc.message)
        if skipped:
            raise SlurmRejected(" ".join(skipped)) from None
        if any(words in exc.message.lower() for words in _SACCTMGR_NOOPS):
            return
        raise
    skipped = _SACCTMGR_SKIPPED.findall(out)
    if skipped:
        raise SlurmRejected(" ".join(skipped))


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
    ensure_associations([user], [account])


def ensure_associations(users: Collection[str], accounts: Collection[str]) -> None:
    """Associate every one of `users` with every one of `accounts` (the whole cross product) in
    one call; pairs that exist are success. A user new to Slurm gets the first account as default."""
    _sacctmgr("add", "user", _names(users, "user"), f"account={_names(accounts, 'account')}",
              f"cluster={_conf().cluster}")


def ensure_coordinator(user: str, account: str) -> None:
    ensure_coordinators([user], [account])


def ensure_coordinators(users: Collection[str], accounts: Collection[str]) -> None:
    """Make every one of `users` coordinator of every one of `accounts` (the cross product) in one call."""
    _sacctmgr("add", "coordinator", f"account={_names(accounts, 'account')}", f"names={_names(users, 'user')}")


def remove_association(user: str, account: str) -> None:
    remove_associations([user], [account])


# ---------------------------------------------------------------- quotas (sacctmgr)
# The team-quota reconciler (portal/quotas/reconcile.py) reads the whole state in two calls and
# writes in batches: each write below takes lists where sacctmgr allows it, because a write costs
# ~0.3-0.5 s whatever it changes. Not `sacctmgr load`: on 22.05.8 its first read (users with
# their associations) crashed slurmdbd here (strtoul on NULL in as_mysql_get_assocs), in a test
# that had just made a coordinator without an association by hand (trigger not pinned down).
# Every value is checked here before it reaches sacctmgr: its `key=value` arguments split on
# commas and '=', so a stray one would change another field.

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
_GPU_TRES_RE = re.compile(r"^gres/gpu(:[A-Za-z0-9_.-]{1,32})?$")


def _checked_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise SlurmRejected(f"not a valid Slurm {what} name: {value!r}")
    return value


def _checked_count(value: int, what: str) -> str:
    # -1 is sacctmgr's "clear this limit".
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise SlurmRejected(f"{what} must be a whole number of at least -1, not {value!r}")
    return str(value)


def read_accounts_state(*, describe: Collection[str] = (),
                        users: Callable[[], dict[str, SlurmUser] | None] | None = None) -> AccountsState:
    """Every association (with Fairshare and GrpTRES) of this cluster and every user (with the
    default account and the accounts it coordinates): the reconciler's view of Slurm. `users`
    may supply the users another way (portal/quotas/coordinators.py reads the coordinators
    incrementally), or return None: the users are then read without coordinators and the
    state says so. By default one `withcoord` call reads them all. A further call reads the
    descriptions of the accounts in `describe`, when there are any."""
    cluster = _conf().cluster
    assocs = cli(["sacctmgr", "-n", "-P", "show", "associations", f"cluster={cluster}",
                  "format=account,user,fairshare,grptres,grptresrunmins,qos,defaultqos"])
    people = users() if users is not None else read_users(with_coordinators=True)
    known = people is not None
    if people is None:
        people = read_users(with_coordinators=False)
    descriptions = {}
    if describe:
        names = ",".join(_checked_name(name, "account") for name in sorted(describe))
        descriptions = parse.descriptions_from_sacctmgr(cli(["sacctmgr", "-n", "-P", "show", "account", "where",
                                                             f"name={names}", "format=account,description"]))
    return AccountsState(associations=tuple(parse.association_limits_from_sacctmgr(assocs)),
                         users=people, descriptions=descriptions, coordinators_known=known)


def read_users(*, with_coordinators: bool, names: Collection[str] | None = None) -> dict[str, SlurmUser]:
    """Slurm's users with their default account, and the accounts they coordinate when asked
    (slurmdbd 22.05 walks the association tree once per coordinator for that: ~9 s for 1,000
    coordinators among 10,000 users, against ~1.3 s without). `names` limits it to those users."""
    args = ["sacctmgr", "-n", "-P", "show", "user"]
    if with_coordinators:
        args.append("withcoord")
    if names is not None:
        wanted = sorted({n for n in names if _NAME_RE.match(n)})
        if not wanted:
            return {}
        args += ["where", f"name={','.join(wanted)}"]
    args.append("format=user,defaultaccount,coordinators" if with_coordinators else "format=user,defaultaccount")
    return parse.users_from_sacctmgr(cli(args))


def coordinator_changes_since(seconds: float) -> list[CoordinatorChange] | None:
    """Who may have gained or lost coordinator rights in the last `seconds`, from slurmdbd's
    transaction log; None when a transaction there cannot be read that way (then read them all).
    "now-N" leaves the time zone out of it: sacctmgr turns it into a moment itself."""
    out = cli(["sacctmgr", "-n", "-P", "show", "transaction", f"start=now-{max(1, math.ceil(seconds))}seconds",
               "format=action,where,info"])
    return parse.coordinator_changes(out)


def fair_share(accounts: Collection[str] | None = None) -> list[FairShareRow]:
    """Fair share as Slurm computes it now: each account's share against its (decayed) usage,
    and each of its users' fair-share factor (sshare -a). `accounts` None: every account; an
    account Slurm does not know is simply absent."""
    args = ["sshare", "-n", "-P", "-a", "-o", parse.SSHARE_FIELDS]
    if accounts is not None:
        names = sorted({_checked_name(name, "account") for name in accounts})
        if not names:
            return []
        args += ["-A", ",".join(names)]
    return parse.fair_share_from_sshare(cli(args))


def set_default_account(user: str, account: str) -> None:
    """Make `account` (where the user already has an association) the user's default."""
    set_default_accounts([user], account)


def set_default_accounts(users: Collection[str], account: str) -> None:
    """Make `account` the default of every one of `users` (each has an association there) in one call."""
    _sacctmgr("modify", "user", "where", f"name={_names(users, 'user')}", f"cluster={_conf().cluster}",
              "set", f"defaultaccount={_checked_name(account, 'account')}")


def gpu_tres_names() -> set[str]:
    """The GPU TRES slurmdbd knows ("gres/gpu", "gres/gpu:h100"); a GrpTRES naming any other
    is refused ("no TRES known by type")."""
    out = cli(["sacctmgr", "-n", "-P", "show", "tres", "type=gres", "format=type,name"])
    names = {f"{kind}/{name}" for kind, _, name in (line.partition("|") for line in out.splitlines())}
    return {n for n in names if _GPU_TRES_RE.match(n)}


def _tres_arg(key: str, tres: dict[str, int]) -> str:
    parts = []
    for name, count in sorted(tres.items()):
        if not _GPU_TRES_RE.match(name):
            raise SlurmRejected(f"not a GPU TRES: {name!r}")
        parts.append(f"{name}={_checked_count(count, name)}")
    return f"{key}=" + ",".join(parts)


def set_account_limits(account: str, **limits) -> None:
    set_accounts_limits([account], **limits)


def set_accounts_limits(accounts: Collection[str], *, fairshare: int | None = None,
                        gpu_tres: dict[str, int] | None = None, gpu_run_mins: dict[str, int] | None = None,
                        qos: Collection[str] = (), default_qos: str | None = None) -> None:
    """Set the same Fairshare, GPU GrpTRES, GPU GrpTRESRunMins, QOS list and default QOS on the
    accounts' own associations in one call (sacctmgr passes them on to the user associations
    that inherit them: checked). TRES maps name to count, -1 clearing it; TRES not named stay
    as they are. `qos` replaces the list when given; `default_qos` "" clears the default."""
    settings_args = []
    if fairshare is not None:
        settings_args.append(f"fairshare={_checked_count(fairshare, 'fairshare')}")
    if gpu_tres:
        settings_args.append(_tres_arg("GrpTRES", gpu_tres))
    if gpu_run_mins:
        settings_args.append(_tres_arg("GrpTRESRunMins", gpu_run_mins))
    if qos:
        settings_args.append("qos=" + ",".join(_checked_name(q, "QOS") for q in qos))
    if default_qos is not None:
        settings_args.append(f"defaultqos={_checked_name(default_qos, 'QOS') if default_qos else -1}")
    if not settings_args:
        return
    _sacctmgr("modify", "account", "where", f"name={_names(accounts, 'account')}",
              f"cluster={_conf().cluster}", "set", *settings_args)


def qos_priorities() -> dict[str, int]:
    """Every QOS with its Priority (a handful: one call)."""
    return parse.qos_priorities_from_sacctmgr(cli(["sacctmgr", "-n", "-P", "show", "qos", "format=name,priority"]))


def ensure_qos(name: str, *, priority: int) -> None:
    """Create a QOS with this Priority; one that exists already is success (its priority is
    then set by set_qos_priority, which the reconciler plans separately)."""
    _sacctmgr("add", "qos", _checked_name(name, "QOS"), f"priority={_checked_count(priority, 'priority')}")


def set_qos_priority(name: str, priority: int) -> None:
    _sacctmgr("modify", "qos", "where", f"name={_checked_name(name, 'QOS')}", "set",
              f"priority={_checked_count(priority, 'priority')}")


_JOB_ID_RE = re.compile(r"^\d+(_(\d+|\[[0-9,%-]+\]))?$")


def pending_jobs_qos() -> list[PendingJobQos]:
    """Every pending job with its account and QOS (one squeue call, the narrow format)."""
    return parse.pending_qos_from_squeue(cli(["squeue", "-h", "-a", "-t", "PENDING", "-o", "%i|%a|%q"]))


def move_jobs_to_qos(job_ids: Collection[str], qos: str) -> None:
    """Put pending jobs in another QOS, all in one scontrol call (it takes a list of ids).
    Slurm recomputes their priority at once."""
    ids = [job_id for job_id in job_ids if _JOB_ID_RE.match(job_id)]
    if ids:
        cli(["scontrol", "update", f"jobid={','.join(ids)}", f"qos={_checked_name(qos, 'QOS')}"])


def remove_coordinator(user: str, account: str) -> None:
    """Take coordinator rights on `account` from `user`; one who has none is success."""
    remove_coordinators([user], [account])


def remove_coordinators(users: Collection[str], accounts: Collection[str]) -> None:
    """Take coordinator rights on every one of `accounts` from every one of `users` (the whole
    cross product) in one call; pairs without the rights are success."""
    try:
        _sacctmgr("remove", "coordinator", f"account={_names(accounts, 'account')}", f"names={_names(users, 'user')}")
    except SlurmRejected as exc:
        if "Nothing removed" not in exc.message:
            raise


def remove_associations(users: Collection[str], accounts: Collection[str]) -> None:
    """Remove every association of `users` with `accounts` (the whole cross product) in one
    call; missing ones are success. A user left with no association at all is removed by Slurm."""
    try:
        _sacctmgr("remove", "user", "where", f"name={_names(users, 'user')}",
                  f"account={_names(accounts, 'account')}", f"cluster={_conf().cluster}")
    except SlurmRejected as exc:
        if "Nothing deleted" not in exc.message:
            raise


def remove_account(name: str) -> None:
    remove_accounts([name])


def remove_accounts(names: Collection[str]) -> None:
    """Remove accounts with every association under them in one call; missing ones are success.
    Slurm refuses while an account has jobs running (the message says so), and then removes none."""
    try:
        _sacctmgr("remove", "account", "where", f"name={_names(names, 'account')}")
    except SlurmRejected as exc:
        if "Nothing deleted" not in exc.message:
            raise


def _names(values: Collection[str], what: str) -> str:
    if not values:
        raise SlurmRejected(f"no {what} names given")
    return ",".join(_checked_name(value, what) for value in sorted(values))
