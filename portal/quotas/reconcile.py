"""The team reconciler: make Slurm's accounts, associations, coordinators, fair shares and GPU
caps match the database.

Desired state comes from the database, actual state from two sacctmgr reads, and only the
difference is applied, each change logged. A second run finds nothing to do, and a change made
by hand in sacctmgr shows up in the plan as drift and is undone.

Applying is batched, because each sacctmgr write costs ~0.3-0.5 s however much it changes, and
writes must never run in parallel (they were seen to lose writes). sacctmgr takes lists of users
and accounts and acts on their whole cross product, so changes of one kind are grouped where the
product is exactly right:
  limits: accounts getting the same settings, one `modify account where name=a,b,...`;
  associations / coordinators to add: groups whose product holds only pairs the database wants;
  associations / coordinators to remove: groups whose product holds no pair the database wants
    (the product's other pairs do not exist, or are removed by this plan anyway);
  defaults: one call per target account;  retired accounts: one call.
New accounts still take one call each (each gets its own description). So a run makes at most
one call per changed object. A refused batch is redone change by change (every write is
idempotent), so a refusal is still reported per change as "FAILED change: message".

Mappings:
  Team -> account (description "portal team NAME");  Membership -> user association;
  lead -> coordinator;  TeamPolicy.shares -> Fairshare on the account's own association;
  max_gpus -> GrpTRES gres/gpu=N;  max_gpus_by_type -> GrpTRES gres/gpu:TYPE=N (and, when every
  GPU type is capped, gres/gpu at most their sum: Slurm checks typed caps only for typed requests);
  a cleared limit -> -1 (Slurm's "no limit");  RetiredTeam -> account removed;
  a used-up hard budget -> GrpTRESRunMins gres/gpu=0;  a used-up soft budget -> the over-budget
  QOS as the association's only and default QOS, and the team's pending jobs moved into it
  (and back out when the budget is raised, cleared or the period ends);
  a user losing the association of their default account -> another of their accounts as default.

Scope, so the portal never touches what it does not own: associations, coordinators and limits
change only on accounts of teams in the database (limits only where an admin set a policy), and
an account is removed only when its team was deleted here (a RetiredTeam row) and it still
carries the portal's description.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from portal.quotas import coordinators
from portal.quotas.usage import teams_usage
from portal.slurm import gateway
from portal.slurm.errors import SlurmRejected
from portal.slurm.types import AccountsState, AssociationLimits, PendingJobQos
from portal.teams.models import Membership, RetiredTeam, Team, TeamPolicy

log = logging.getLogger(__name__)

# Slurm's Fairshare when none is set (what `fairshare=-1` reads back as).
DEFAULT_FAIRSHARE = "1"
GPU_TRES = "gres/gpu"
# Any fixed number: the key of the Postgres advisory lock that serialises reconciler runs.
LOCK_KEY = 0x71_0741
# Names per side of one batched removal: keeps the command line and the packing cost bounded.
MAX_NAMES_PER_CALL = 200


def account_description(team: str) -> str:
    return f"portal team {team}"


@dataclass(frozen=True)
class Change:
    """One sacctmgr write. `was` is what Slurm held (drift shows here); `fairshare` and `gpu_tres`
    are set only for a limits change."""

    action: str                      # add_account, set_limits, add_association, add_coordinator, set_default,
    account: str                     # remove_coordinator, remove_association, remove_account, add_qos,
    user: str = ""                   # set_qos_priority (account is then the QOS), move_jobs
    fairshare: int | None = None
    gpu_tres: tuple[tuple[str, int], ...] = ()
    run_mins: tuple[tuple[str, int], ...] = ()     # GrpTRESRunMins: a hard budget's switch
    qos: tuple[str, ...] = ()                       # the QOS list (a soft budget's switch); move_jobs: the target
    default_qos: str | None = None                  # "" clears it
    priority: int | None = None                     # add_qos, set_qos_priority
    job_ids: tuple[str, ...] = ()                   # move_jobs
    budget: str = ""                                # why: "hard"/"soft" (used up) or "in budget"
    was: str = ""
    # set_limits that makes the soft switch: the QOS list and default it replaces, kept in the
    # database for the switch back (None: nothing to keep).
    replaced_qos: tuple[tuple[str, ...], str] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        what = {"add_account": f"add account {self.account}",
                "remove_account": f"remove account {self.account} (team deleted)",
                "add_association": f"associate {self.user} with {self.account}",
                "remove_association": f"remove {self.user} from {self.account}",
                "add_coordinator": f"make {self.user} coordinator of {self.account}",
                "set_default": f"make {self.account} the default account of {self.user}",
                "remove_coordinator": f"take coordinator rights on {self.account} from {self.user}",
                "set_limits": f"set {self._limits_text()} on {self.account}",
                "add_qos": f"add QOS {self.account} with Priority={self.priority}",
                "set_qos_priority": f"set Priority={self.priority} on QOS {self.account}",
                "move_jobs": f"move pending jobs {','.join(self.job_ids)} of {self.account} to QOS "
                             f"{''.join(self.qos)}"}[self.action]
        if self.budget:
            what += f" ({'budget used up, ' + self.budget if self.budget in ('hard', 'soft') else self.budget})"
        return f"{what} (Slurm has {self.was})" if self.was else what

    def _limits_text(self) -> str:
        parts = [] if self.fairshare is None else [f"Fairshare={self.fairshare}"]
        if self.gpu_tres:
            parts.append("GrpTRES=" + ",".join(f"{n}={c}" for n, c in self.gpu_tres))
        if self.run_mins:
            parts.append("GrpTRESRunMins=" + ",".join(f"{n}={c}" for n, c in self.run_mins))
        if self.qos:
            parts.append("QOS=" + ",".join(self.qos))
        if self.default_qos is not None:
            parts.append(f"DefaultQOS={self.default_qos or '-'}")
        return " ".join(parts)


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)   # (change, Slurm's message)
    # Pairs the database wants: a batched addition's cross product holds only these, a batched
    # removal's none of them.
    keep_associations: frozenset[tuple[str, str]] = frozenset()
    keep_coordinators: frozenset[tuple[str, str]] = frozenset()
    # False when this run could not read coordinators (portal/quotas/coordinators.py): it plans
    # no coordinator change, and a later run does.
    coordinators_known: bool = True
    # Accounts whose kept pre-switch QOS list is spent once this plan is applied (back in budget).
    spent_qos_lists: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self, *, verb: str) -> list[str]:
        refused = dict(self.failed)
        return [f"FAILED {change}: {refused[change]}" if change in refused else f"{verb} {change}"
                for change in self.changes]


# ---------------------------------------------------------------- desired state

@dataclass(frozen=True)
class Desired:
    teams: frozenset[str]
    associations: frozenset[tuple[str, str]]          # (user, account)
    coordinators: frozenset[tuple[str, str]]
    limits: dict[str, tuple[str, dict[str, str]]]     # account -> (fairshare, gpu GrpTRES)
    retired: frozenset[str]
    # account -> "" (within budget or none), "hard" or "soft" (used up), for every team with a policy.
    budgets: dict[str, str] = field(default_factory=dict)
    budgeted: bool = False           # some policy has a budget: the queue and the QOS are read
    soft: bool = False               # some policy has a soft budget: the over-budget QOS must exist
    # account -> (QOS list, default QOS) its association held before the soft switch in force.
    saved_qos: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)

    def home_qos(self, account: str) -> str:
        """The QOS the account's pending jobs go back to when its soft switch is undone."""
        qos, default = self.saved_qos.get(account, ((), ""))
        _, normal_qos = _budget_conf()
        return default or (normal_qos if normal_qos in qos or not qos else qos[0])


def _policy_limits(policy: TeamPolicy, gpu_types: frozenset[str]) -> tuple[str, dict[str, str]]:
    fairshare = str(policy.shares) if policy.shares is not None else DEFAULT_FAIRSHARE
    by_type = policy.max_gpus_by_type or {}
    tres = {f"{GPU_TRES}:{gpu_type}": str(count) for gpu_type, count in by_type.items()}
    overall = policy.max_gpus
    # Slurm 22.05 checks a typed cap only against jobs that name the type: `--gres=gpu:2` ran
    # past GrpTRES=gres/gpu:h100=1 holding two h100s (checked). When every GPU type the cluster
    # has is capped, the team can never rightly hold more than their sum, so that sum also caps
    # gres/gpu, which binds untyped requests too.
    if by_type and gpu_types and gpu_types <= tres.keys():
        overall = min(sum(by_type.values()), overall if overall is not None else sum(by_type.values()))
    if overall is not None:
        tres[GPU_TRES] = str(overall)
    return fairshare, tres


def desired_state(*, gpu_types: frozenset[str] = frozenset()) -> Desired:
    """What Slurm should hold. `gpu_types`: every typed GPU TRES of the cluster ("gres/gpu:h100"),
    needed only where a policy caps GPU types."""
    teams = frozenset(Team.objects.values_list("name", flat=True))
    members = list(Membership.objects.values_list("user__username", "team__name", "role"))
    policies = list(TeamPolicy.objects.select_related("team"))
    return Desired(
        teams=teams,
        associations=frozenset((user, team) for user, team, _ in members),
        coordinators=frozenset((user, team) for user, team, role in members if role == Membership.Role.LEAD),
        limits={p.team.name: _policy_limits(p, gpu_types) for p in policies},
        retired=frozenset(RetiredTeam.objects.values_list("name", flat=True)) - teams,
        budgets=_budget_states(policies),
        budgeted=any(p.gpu_hours_budget is not None for p in policies),
        soft=any(p.gpu_hours_budget is not None and p.over_budget == TeamPolicy.OverBudget.SOFT for p in policies),
        saved_qos={p.team.name: (tuple(p.qos_before_budget.get("qos", ())), p.qos_before_budget.get("default", ""))
                   for p in policies if p.qos_before_budget},
    )


def _budget_states(policies: list[TeamPolicy]) -> dict[str, str]:
    """Each policy team's budget state ("", "hard" or "soft": used up), every budgeted team's
    usage read at once. Usage restarts with each period, so at the period's edge a team's state
    turns "" by itself and the next run switches it back."""
    budgeted = [p.team for p in policies if p.gpu_hours_budget is not None]
    usage = teams_usage(budgeted) if budgeted else {}
    return {p.team.name: usage[p.team_id].over_budget if p.team_id in usage else "" for p in policies}


def _gpu_types_if_capped() -> frozenset[str]:
    # One more sacctmgr read, made only when some policy caps GPU types.
    if not TeamPolicy.objects.exclude(max_gpus_by_type={}).exists():
        return frozenset()
    return frozenset(name for name in gateway.gpu_tres_names() if name.startswith(GPU_TRES + ":"))


@dataclass(frozen=True)
class QueueState:
    """The QOS priorities and pending jobs, read only where budgets need them."""

    qos_priorities: dict[str, int]
    pending: tuple[PendingJobQos, ...]


def _budget_conf() -> tuple[str, str]:
    conf = settings.TEAM_BUDGETS
    return conf["OVER_BUDGET_QOS"], conf["NORMAL_QOS"]


def _needs_queue(want: Desired, actual: AccountsState) -> bool:
    # Two more reads (sacctmgr show qos, squeue) only where budgets are in play: some policy has
    # one, or some team's association still holds the over-budget QOS (a budget just cleared).
    over_qos, _ = _budget_conf()
    return want.budgeted or any(over_qos in (*a.qos, a.default_qos) for a in actual.associations
                                if not a.user and a.account in want.budgets)


def _plan(*, wait_for_coordinators: bool = True, ask_worker: bool = True) -> Plan:
    want = desired_state(gpu_types=_gpu_types_if_capped())
    actual = gateway.read_accounts_state(describe=want.retired, users=lambda: coordinators.current_users(
        wait_for_full_read=wait_for_coordinators, ask_worker=ask_worker))
    queue = None
    if _needs_queue(want, actual):
        queue = QueueState(gateway.qos_priorities(), tuple(gateway.pending_jobs_qos()))
    return plan_changes(want, actual, queue)


# ---------------------------------------------------------------- the diff

def _gpu_only(tres: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in tres.items() if name == GPU_TRES or name.startswith(GPU_TRES + ":")}


def _budget_switch(budget: str, row: AssociationLimits | None,
                   saved: tuple[tuple[str, ...], str] | None = None) -> dict:
    """The Change fields that put the account's budget state in Slurm, {} when it is there.

    Hard: GrpTRESRunMins=gres/gpu=0. No GPU job of the account can start (its GPU-minutes
    would pass 0; pending reason AssocGrpGRESRunMinutes), while running jobs run on: Slurm
    checks run-minute limits only when starting a job (checked on 22.05: a job running when
    the limit was set finished normally). GrpTRESMins would also block starts, but Slurm
    cancels running jobs once usage reaches it, and it counts decayed all-time usage, not
    the portal's period.
    Soft: the over-budget QOS as the only QOS (so `sbatch --qos=normal` is refused, checked)
    and as the default (so plain sbatch lands in it); what it replaces is kept (`replaced_qos`)
    unless a switch is already in force (`saved`: then Slurm's list may be someone's drift).
    Back within budget: the `saved` list and default, or without one (a switch made before
    lists were kept) the list without the over-budget QOS (normal when nothing is left) and
    no default."""
    over_qos, normal_qos = _budget_conf()
    run_mins = (row.grp_tres_run_mins.get(GPU_TRES) if row else None) or None
    qos, default = (row.qos, row.default_qos) if row else ((), "")
    fields: dict = {}
    want_run = "0" if budget == "hard" else None
    if run_mins != want_run:
        fields["run_mins"] = ((GPU_TRES, 0 if want_run else -1),)
    if budget == "soft" and (qos != (over_qos,) or default != over_qos):
        fields.update(qos=(over_qos,), default_qos=over_qos)
        if saved is None and over_qos not in (*qos, default):
            fields["replaced_qos"] = (qos, default)
    elif budget != "soft" and saved is not None:
        back = tuple(q for q in saved[0] if q != over_qos) or (normal_qos,)
        if (tuple(sorted(qos)), default) != (tuple(sorted(back)), saved[1]):
            fields.update(qos=back, default_qos=saved[1] if default != saved[1] else None)
    elif budget != "soft" and over_qos in (*qos, default):
        fields.update(qos=tuple(q for q in qos if q != over_qos) or (normal_qos,),
                      default_qos="" if default == over_qos else None)
    if fields:
        fields["budget"] = budget or "in budget"
    return fields


def _was_text(row: AssociationLimits, have_share: str, have_tres: dict[str, str], *, budget: bool) -> str:
    was = f"Fairshare={have_share} GrpTRES={','.join(f'{k}={v}' for k, v in sorted(have_tres.items())) or '-'}"
    if not budget:   # the budget fields are shown only when they change
        return was
    run_mins = row.grp_tres_run_mins.get(GPU_TRES)
    return was + f" GrpTRESRunMins={f'{GPU_TRES}={run_mins}' if run_mins else '-'}" + \
        f" QOS={','.join(row.qos) or '-'} DefaultQOS={row.default_qos or '-'}"


def _limits_change(account: str, want: tuple[str, dict[str, str]], row: AssociationLimits | None,
                   budget: str = "", saved: tuple[tuple[str, ...], str] | None = None) -> Change | None:
    """One change of the account association: shares, caps and budget switch together, so one
    sacctmgr call."""
    have_share = row.fairshare if row else DEFAULT_FAIRSHARE
    have_tres = _gpu_only(row.grp_tres) if row else {}
    want_share, want_tres = want
    tres = {name: int(value) for name, value in want_tres.items() if have_tres.get(name) != value}
    tres |= {name: -1 for name in have_tres.keys() - want_tres.keys()}
    fairshare = None
    if have_share != want_share:
        fairshare = -1 if want_share == DEFAULT_FAIRSHARE else int(want_share)   # -1: Slurm's default
    switch = _budget_switch(budget, row, saved)
    if not tres and fairshare is None and not switch:
        return None
    return Change("set_limits", account, fairshare=fairshare, gpu_tres=tuple(sorted(tres.items())),
                  was=_was_text(row, have_share, have_tres, budget=bool(switch)) if row else "", **switch)


def _account_changes(want: Desired, rows: dict[str, AssociationLimits]) -> list[Change]:
    changes = [Change("add_account", team) for team in sorted(want.teams - rows.keys())]
    for account in sorted(want.limits):
        change = _limits_change(account, want.limits[account], rows.get(account), want.budgets.get(account, ""),
                                want.saved_qos.get(account))
        if change:
            changes.append(change)
    return changes


def _retired_accounts(want: Desired, actual: AccountsState) -> list[str]:
    return [name for name in sorted(want.retired) if actual.descriptions.get(name) == account_description(name)]


def _member_changes(want: Desired, actual: AccountsState) -> tuple[list[Change], list[Change]]:
    """(additions, removals) of associations and coordinator rights on the teams' accounts."""
    have_assocs = {(a.user, a.account) for a in actual.associations if a.user and a.account in want.teams}
    have_coords = {(user.name, account) for user in actual.users.values() for account in user.coordinates
                   if account in want.teams}
    # Coordinators not read this run: none added or removed (a later run does it).
    want_coords = want.coordinators if actual.coordinators_known else have_coords
    additions = ([Change("add_association", a, u) for u, a in sorted(want.associations - have_assocs)]
                 + [Change("add_coordinator", a, u) for u, a in sorted(want_coords - have_coords)])
    # A demoted lead, or a coordinator someone added by hand, loses the rights.
    removals = ([Change("remove_coordinator", a, u, was="coordinator")
                 for u, a in sorted(have_coords - want_coords)]
                + [Change("remove_association", a, u, was="an association")
                   for u, a in sorted(have_assocs - want.associations)])
    return additions, removals


def _default_changes(want: Desired, actual: AccountsState, lost: set[tuple[str, str]],
                     gained: set[tuple[str, str]]) -> list[Change]:
    """Slurm leaves a user whose default account's association is removed with no default at all
    (plain `sbatch` without -A then fails), so point such a user at an account they keep: one of
    their teams first."""
    after = {(a.user, a.account) for a in actual.associations if a.user} - lost | gained
    changes = []
    for user in sorted({u for u, _ in lost}):
        default = actual.users[user].default_account if user in actual.users else ""
        remaining = sorted(a for u, a in after if u == user)
        if not remaining or (user, default) in after:
            continue
        teams = [a for a in remaining if (user, a) in want.associations]
        changes.append(Change("set_default", (teams or remaining)[0], user, was=f"default {default or 'none'}"))
    return changes


def _qos_changes(want: Desired, queue: QueueState) -> list[Change]:
    """The over-budget QOS with its Priority, and a normal QOS ranked above it: Slurm's default
    Priority is 0 for every QOS, and a QOS factor of 0 against 0 puts no one behind."""
    if not want.soft:
        return []
    conf = settings.TEAM_BUDGETS
    over_qos, normal_qos = _budget_conf()
    low, high = conf["OVER_BUDGET_QOS_PRIORITY"], conf["NORMAL_QOS_PRIORITY"]
    have = queue.qos_priorities
    changes = []
    if over_qos not in have:
        changes.append(Change("add_qos", over_qos, priority=low))
    elif have[over_qos] != low:
        changes.append(Change("set_qos_priority", over_qos, priority=low, was=f"Priority={have[over_qos]}"))
    if normal_qos in have and have[normal_qos] <= low:
        changes.append(Change("set_qos_priority", normal_qos, priority=max(high, low + 1),
                              was=f"Priority={have[normal_qos]}"))
    return changes


def _job_moves(want: Desired, queue: QueueState) -> list[Change]:
    """Pending jobs of soft-over teams into the over-budget QOS; those of every other team back
    out to the normal QOS (the budget was raised or cleared, or a new period began). One
    scontrol call per team and direction."""
    over_qos, _ = _budget_conf()
    moves: dict[tuple[str, str], list[str]] = {}
    for job in queue.pending:
        if job.account not in want.budgets:
            continue
        soft = want.budgets[job.account] == "soft"
        if soft and job.qos != over_qos:
            moves.setdefault((job.account, over_qos), []).append(job.job_id)
        elif not soft and job.qos == over_qos:
            moves.setdefault((job.account, want.home_qos(job.account)), []).append(job.job_id)
    return [Change("move_jobs", account, qos=(target,), job_ids=tuple(ids),
                   budget=want.budgets[account] or "in budget")
            for (account, target), ids in sorted(moves.items())]


def plan_changes(want: Desired, actual: AccountsState, queue: QueueState | None = None) -> Plan:
    """QOS first, then additions, then default accounts, then removals: nothing is taken away
    before what replaces it is in place. Pending jobs move last, once their association allows
    the QOS they move to (Slurm refuses a QOS the association lacks)."""
    rows = {a.account: a for a in actual.associations if not a.user}
    additions, removals = _member_changes(want, actual)
    retired = _retired_accounts(want, actual)
    lost = ({(c.user, c.account) for c in removals if c.action == "remove_association"}
            | {(a.user, a.account) for a in actual.associations if a.user and a.account in retired})
    gained = {(c.user, c.account) for c in additions if c.action == "add_association"}
    qos, moves = (_qos_changes(want, queue), _job_moves(want, queue)) if queue else ([], [])
    return Plan(changes=qos + _account_changes(want, rows) + additions
                + _default_changes(want, actual, lost, gained)
                + removals + [Change("remove_account", name) for name in retired] + moves,
                keep_associations=want.associations, keep_coordinators=want.coordinators,
                coordinators_known=actual.coordinators_known,
                spent_qos_lists=frozenset(a for a in want.saved_qos if want.budgets.get(a, "") != "soft"))


# ---------------------------------------------------------------- applying

def _apply(change: Change) -> None:
    """One change in its own sacctmgr call: the fallback for a refused batch."""
    match change.action:
        case "add_account":
            gateway.ensure_account(change.account, description=account_description(change.account))
        case "set_limits":
            gateway.set_account_limits(change.account, fairshare=change.fairshare, gpu_tres=dict(change.gpu_tres),
                                       gpu_run_mins=dict(change.run_mins), qos=change.qos,
                                       default_qos=change.default_qos)
        case "add_qos":
            gateway.ensure_qos(change.account, priority=change.priority or 0)
        case "set_qos_priority":
            gateway.set_qos_priority(change.account, change.priority or 0)
        case "move_jobs":
            gateway.move_jobs_to_qos(change.job_ids, change.qos[0])
        case "add_association":
            gateway.ensure_association(change.user, change.account)
        case "add_coordinator":
            gateway.ensure_coordinator(change.user, change.account)
        case "remove_coordinator":
            gateway.remove_coordinator(change.user, change.account)
        case "remove_association":
            gateway.remove_association(change.user, change.account)
        case "set_default":
            gateway.set_default_account(change.user, change.account)
        case "remove_account":
            gateway.remove_account(change.account)


@dataclass(frozen=True)
class Batch:
    """Changes made by one sacctmgr call."""

    changes: list[Change]
    write: Callable[[], None]


def _limit_batches(changes: list[Change]) -> list[Batch]:
    """Accounts that get exactly the same settings share one `modify account where name=a,b`."""
    groups: dict[tuple, list[Change]] = defaultdict(list)
    for c in changes:
        if c.action == "set_limits":
            groups[(c.fairshare, c.gpu_tres, c.run_mins, c.qos, c.default_qos)].append(c)
    batches = []
    for (fairshare, tres, run_mins, qos, default_qos), group in groups.items():
        for part in _chunks(group):
            batches.append(Batch(part, lambda f=fairshare, t=tres, r=run_mins, q=qos, d=default_qos, p=part:
                                 gateway.set_accounts_limits([c.account for c in p], fairshare=f, gpu_tres=dict(t),
                                                             gpu_run_mins=dict(r), qos=q, default_qos=d)))
    return batches


def _chunks(changes: list[Change]) -> list[list[Change]]:
    return [changes[i:i + MAX_NAMES_PER_CALL] for i in range(0, len(changes), MAX_NAMES_PER_CALL)]


def _pack(pairs: list[tuple[str, str]], allowed: Callable[[tuple[str, str]], bool]) -> list[list[tuple[str, str]]]:
    """Group (user, account) pairs so that every pair of each group's cross product of users and
    accounts is `allowed`. Greedy over the last few groups only, so packing stays linear."""
    groups: list[tuple[set[str], set[str], list[tuple[str, str]]]] = []
    for user, account in pairs:
        for users, accounts, members in groups[-8:]:
            if (len(users) < MAX_NAMES_PER_CALL and len(accounts) < MAX_NAMES_PER_CALL
                    and all(allowed((user, a)) for a in accounts | {account})
                    and all(allowed((u, account)) for u in users)):
                users.add(user)
                accounts.add(account)
                members.append((user, account))
                break
        else:
            groups.append(({user}, {account}, [(user, account)]))
    return [members for _, _, members in groups]


def _pair_batches(changes: list[Change], action: str, allowed: Callable[[tuple[str, str]], bool],
                  write: Callable[[set[str], set[str]], None]) -> list[Batch]:
    mine = {(c.user, c.account): c for c in changes if c.action == action}
    batches = []
    for members in _pack(list(mine), allowed):
        users, accounts = {u for u, _ in members}, {a for _, a in members}
        batches.append(Batch([mine[pair] for pair in members], lambda u=users, a=accounts: write(u, a)))
    return batches


def _batches(plan: Plan) -> list[Batch]:
    """The plan's changes as sacctmgr (and scontrol) calls, in the plan's order: QOS, accounts
    and limits, additions, defaults, removals, then pending jobs' QOS moves."""
    changes = plan.changes
    want_assocs, want_coords = plan.keep_associations, plan.keep_coordinators
    # QOS first (a soft budget's switch names the over-budget QOS), then accounts and limits.
    batches = [Batch([c], lambda c=c: _apply(c)) for c in changes if c.action in ("add_qos", "set_qos_priority")]
    batches += [Batch([c], lambda c=c: _apply(c)) for c in changes if c.action == "add_account"]
    batches += _limit_batches(changes)
    batches += _pair_batches(changes, "add_association", want_assocs.__contains__, gateway.ensure_associations)
    batches += _pair_batches(changes, "add_coordinator", want_coords.__contains__, gateway.ensure_coordinators)
    defaults: dict[str, list[Change]] = defaultdict(list)
    for c in changes:
        if c.action == "set_default":
            defaults[c.account].append(c)
    batches += [Batch(group, lambda a=account, g=group: gateway.set_default_accounts({c.user for c in g}, a))
                for account, group in defaults.items()]
    batches += _pair_batches(changes, "remove_coordinator", lambda pair: pair not in want_coords,
                             gateway.remove_coordinators)
    batches += _pair_batches(changes, "remove_association", lambda pair: pair not in want_assocs,
                             gateway.remove_associations)
    retired = [c for c in changes if c.action == "remove_account"]
    if retired:
        batches.append(Batch(retired, lambda: gateway.remove_accounts({c.account for c in retired})))
    # Pending jobs move last, once their association allows the QOS they move to.
    batches += [Batch([c], lambda c=c: _apply(c)) for c in changes if c.action == "move_jobs"]
    return batches


def _apply_each(plan: Plan, changes: list[Change]) -> None:
    for change in changes:
        try:
            _apply(change)
        except SlurmRejected as exc:
            log.warning("reconcile: %s refused: %s", change, exc.message)
            plan.failed.append((change, exc.message))
            continue
        _keep_qos_lists(plan, [change])
        _note_coordinator_writes([change])
        log.info("reconcile: %s", change)


def _keep_qos_lists(plan: Plan, applied: list[Change]) -> None:
    """Remember the QOS list each applied soft switch replaced, and forget the lists an applied
    switch back restored. Called per write Slurm took, so a run cut short keeps what it did."""
    for change in applied:
        if change.action != "set_limits":
            continue
        if change.replaced_qos is not None:
            qos, default = change.replaced_qos
            TeamPolicy.objects.filter(team__name=change.account, qos_before_budget={}) \
                .update(qos_before_budget={"qos": list(qos), "default": default})
        elif change.account in plan.spent_qos_lists:
            TeamPolicy.objects.filter(team__name=change.account).update(qos_before_budget={})


def _note_coordinator_writes(applied: list[Change]) -> None:
    """Coordinator writes Slurm took, into the coordinator copy (portal/quotas/coordinators.py),
    so the next run need not re-read those users. A batch's changes are exactly its product."""
    for action, kind in (("add_coordinator", "add"), ("remove_coordinator", "remove")):
        mine = [c for c in applied if c.action == action]
        if mine:
            coordinators.wrote(kind, {c.user for c in mine}, {c.account for c in mine})


def _forget_restored(plan: Plan) -> None:
    """Lists of teams back in budget whose association needs no change: Slurm holds them already."""
    changing = {c.account for c in plan.changes if c.action == "set_limits"}
    if plan.spent_qos_lists - changing:
        TeamPolicy.objects.filter(team__name__in=plan.spent_qos_lists - changing).update(qos_before_budget={})


def apply_plan(plan: Plan, *, batched: bool = True) -> None:
    """Apply `plan`'s changes, in batches (or, `batched=False`, one call per change, the way
    before batching; kept for the fallback and the benchmark's baseline)."""
    _forget_restored(plan)
    if not batched:
        _apply_each(plan, plan.changes)
        return
    for batch in _batches(plan):
        try:
            batch.write()
        except SlurmRejected as exc:
            if len(batch.changes) > 1:
                log.info("reconcile: a batch of %d changes was refused (%s); applying them one by one",
                         len(batch.changes), exc.message)
            _apply_each(plan, batch.changes)
            continue
        _keep_qos_lists(plan, batch.changes)
        _note_coordinator_writes(batch.changes)
        for change in batch.changes:
            log.info("reconcile: %s", change)


def pending_changes() -> Plan:
    """What a run would change now, without waiting for a running one nor for a full
    coordinator read (for pages: `coordinators_known` says whether coordinators were compared)."""
    return _plan(wait_for_coordinators=False, ask_worker=False)


@contextmanager
def _one_run_at_a_time() -> Iterator[None]:
    """The API's hand-off and beat may start runs together; the second waits for the first, then
    reads the state it left (so it applies nothing twice)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def reconcile_teams(*, dry_run: bool = False, batched: bool = True, wait_for_coordinators: bool = True) -> Plan:
    """Plan and (unless `dry_run`) apply. A change Slurm refuses (e.g. removing an account with
    running jobs) is logged and kept in `plan.failed`; the rest still go ahead. SlurmUnavailable
    propagates, so the task retries. `batched=False`: one sacctmgr call per change.
    `wait_for_coordinators=False` (the worker): when every coordinator must be read again
    (~10 s at 1,000 teams), that read goes to the worker and this run leaves coordinators alone."""
    with _one_run_at_a_time():
        plan = _plan(wait_for_coordinators=wait_for_coordinators)
        if not dry_run:
            apply_plan(plan, batched=batched)
        return plan
