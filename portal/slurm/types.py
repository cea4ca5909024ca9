"""Typed results of the Slurm gateway. Plain frozen dataclasses: nothing here talks to Slurm."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from portal.slurm.gres import gpu_count

# Job states after which Slurm will not run the job again without a requeue.
FINISHED_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT",
})


@dataclass(frozen=True)
class JobSpec:
    """What a user asks Slurm to run. Validated by the portal before it gets here."""

    name: str
    account: str
    script: str
    working_dir: str
    partition: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    gpu_type: str = ""
    cpus_per_task: int = 1
    mem_mb: int = 0
    time_limit_min: int = 60
    requeue: bool = True
    stdout: str = ""
    stderr: str = ""
    comment: str = ""
    hold: bool = False
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    name: str
    user: str
    account: str
    partition: str
    state: str
    reason: str
    nodes: str
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    comment: str = ""
    exit_code: int | None = None
    restarts: int = 0
    stdout: str = ""
    stderr: str = ""
    working_dir: str = ""
    time_limit_min: int | None = None
    estimated_start: datetime | None = None   # Slurm's backfill estimate for a pending job
    # Requested resources; filled by the tracker's sweep (0/"" where a reader does not give them).
    num_nodes: int = 0
    cpus_per_task: int = 0
    mem_mb: int = 0
    gres_per_node: str = ""         # e.g. "gpu:h100:4"
    requeue: bool = True

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class QueueSweep:
    """The queue read in one query: `jobs` (all but those skipped as long ended), the ids of
    every job in it, and a `digest` that changes whenever any of it does."""

    jobs: tuple[JobInfo, ...]
    queued_ids: frozenset[int]
    digest: str


@dataclass(frozen=True)
class NodeInfo:
    name: str
    state: str                      # Slurm's base state: IDLE, MIXED, ALLOCATED, DOWN, ...
    flags: tuple[str, ...]          # DRAIN, NOT_RESPONDING, ...
    reason: str
    gres: str                       # e.g. "gpu:h100:4"
    gres_used: str
    cpus: int
    alloc_cpus: int
    real_memory_mb: int
    partitions: tuple[str, ...]

    @property
    def gpus(self) -> int:
        return gpu_count(self.gres)

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.flags


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    nodes: str
    is_default: bool
    state: str
    max_time_min: int | None        # None: no limit
    total_nodes: int
    total_gpus: int


@dataclass(frozen=True)
class AccountingRecord:
    """A job's accounting from sacct (finished jobs included), for its last attempt.

    When the last attempt never ran (cancelled while pending after a requeue), the placement
    and figures are those of the latest attempt that did: that is where and how long it ran.
    """

    job_id: int
    state: str
    exit_code: int | None
    signal: int | None
    elapsed_s: int
    cpu_time_s: int                 # allocated: CPUTimeRAW, elapsed x allocated CPUs
    max_rss_kb: int | None          # the largest step's MaxRSS (needs the step sampled)
    start_time: datetime | None
    end_time: datetime | None
    total_cpu_s: float | None = None   # used: TotalCPU, user + system time of every step
    alloc_cpus: int = 0
    req_mem_mb: int | None = None      # the job's whole request (ReqMem), all nodes
    nodes: str = ""                    # where it ran; "" if it never did
    attempts: int = 1                  # sacct rows for the job (1 + requeues it has seen)


@dataclass(frozen=True)
class JobDetail:
    """What the recovery worker needs to requeue one job and check Slurm took it (slurmrestd's
    /job/{id}): placement constraints, hold and eligibility as Slurm holds them now."""

    job_id: int
    state: str
    reason: str
    restarts: int
    nodes: str                      # where it runs (or ran); "" while pending
    required_nodes: str             # ReqNodeList (sbatch -w)
    excluded_nodes: str             # ExcNodeList
    priority: int                   # 0: held
    eligible_time: datetime | None  # a requeued job waits until then (Slurm adds ~120 s)
    admin_comment: str
    requeue: bool
    gpus: int                       # GPUs of the allocation (TRES), 0 while pending

    @property
    def held(self) -> bool:
        return self.state == "PENDING" and self.priority == 0

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class RunRecord:
    """One run of a job in accounting (`sacct -D -X`: every requeue starts another run)."""

    job_id: int
    index: int                      # 0 for the first run: Slurm's restart count during it
    state: str                      # NODE_FAIL, REQUEUED, FAILED, COMPLETED, ...
    exit_code: int | None
    signal: int | None
    nodes: str
    start_time: datetime | None
    end_time: datetime | None
    elapsed_s: int
    gpus: int


@dataclass(frozen=True)
class QueuedJob:
    """A waiting job as the queue-position view needs it."""

    job_id: int
    user: str
    account: str
    priority: int
    reason: str


@dataclass(frozen=True)
class PriorityFactors:
    """sprio's normalised factors (0..1) and the job's total priority."""

    priority: float
    age: float
    fairshare: float
    job_size: float
    partition: float
    qos: float


@dataclass(frozen=True)
class Association:
    account: str
    user: str                       # "" for the account's own row


@dataclass(frozen=True)
class AssociationLimits:
    """One association row with the fields the quota reconciler manages."""

    account: str
    user: str                       # "" for the account's own row
    fairshare: str                  # as sacctmgr prints it: "1" by default, "parent" possible
    grp_tres: dict[str, str] = field(default_factory=dict)   # {"gres/gpu": "4", "gres/gpu:h100": "2"}
    grp_tres_run_mins: dict[str, str] = field(default_factory=dict)   # {"gres/gpu": "0"}: a used-up hard budget
    qos: tuple[str, ...] = ()       # the QOS the association may use, as sacctmgr lists them
    default_qos: str = ""


@dataclass(frozen=True)
class PendingJobQos:
    """A pending job's QOS: what the over-budget switch moves (portal/quotas/reconcile.py)."""

    job_id: str                     # "123", or an array's "123_[4-9]" / "123_4"
    account: str
    qos: str


@dataclass(frozen=True)
class SlurmUser:
    name: str
    default_account: str            # "" when the user has none (its association was removed)
    coordinates: frozenset[str] = frozenset()    # accounts this user coordinates


@dataclass(frozen=True)
class CoordinatorChange:
    """One row of slurmdbd's transaction log that may have changed coordinator rights: the users
    whose rights, and the accounts whose coordinators, it may have changed. `kind` is "add" (one
    user made coordinator of one account), "remove" (a user='..' && acct='..' condition: the
    rights of those users on those accounts taken), or "other" (users or accounts removed or
    modified: anything of theirs may have changed)."""

    kind: str
    users: frozenset[str]
    accounts: frozenset[str]


@dataclass(frozen=True)
class AccountsState:
    """What sacctmgr holds for the cluster: associations and users in two calls, descriptions
    only of the accounts asked about."""

    associations: tuple[AssociationLimits, ...]
    users: dict[str, SlurmUser]
    descriptions: dict[str, str] = field(default_factory=dict)
    # False when the users were read without the accounts they coordinate (their
    # `coordinates` are then empty, not "none"): nothing may be decided about coordinators.
    coordinators_known: bool = True


@dataclass(frozen=True)
class FairShareRow:
    """One association as `sshare` sees it (portal/teams team pages). Slurm prints no value for
    some fields on some rows (an account's own row has no FairShare factor under Fair Tree), so
    those are None rather than a made-up 0."""

    account: str
    user: str                       # "" for the account's own row
    raw_shares: int | None          # the Fairshare set in sacctmgr; None for "parent"
    norm_shares: float | None       # share among its siblings, 0..1
    raw_usage: int                  # decayed usage, TRES-seconds
    effective_usage: float | None   # share of its siblings' usage, 0..1
    fair_share: float | None        # the factor priority/multifactor uses, 0..1
    level_fs: float | None          # norm_shares / effective_usage; inf when unused
