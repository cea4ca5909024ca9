"""One page of the jobs a user may see: keyset paging over index-friendly branches.

What a user may see is a union: their own jobs, plus each team they lead (admins: all).
A state filter is a set of states. Written as one `(owner = me OR team IN led) AND state IN
(...) ORDER BY id DESC LIMIT 51`, PostgreSQL cannot use an index for both the filter and
the order, and its row estimates assume owners and states are independent. With a million
rows that guess went wrong by seconds: alice, who has no running jobs, asking for
PENDING,RUNNING made it walk all 50,000 of her jobs (0.8 s).

So the page is built from branches: one per (owner or led team) x state. Each branch is a
`WHERE owner = ? AND state = ? ORDER BY id DESC LIMIT 51` that one composite index answers
by reading at most 51 entries. The branches go to PostgreSQL as a single UNION of ids;
the page's rows are then fetched by primary key. Cost: a few ms, whatever the table size
and whatever the filter matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import or_

from django.db.models import Q

from portal.jobs import states
from portal.jobs.access import is_admin, led_team_ids, visible_jobs
from portal.jobs.models import Job

JOB_SORTS = {"newest": ("-id",), "oldest": ("id",), "name": ("name", "id")}
# Listed (not "NOT IN finished") so the filter can use the state index; "" is a row Slurm
# has not confirmed yet, SUBMIT_FAILED one it never queued.
ACTIVE_STATES = tuple(sorted(states.ACTIVE))
ENDED_STATES = tuple(sorted(states.ENDED))
# The job list reads only these columns: a page of 50 rows must not drag scripts along.
LIST_COLUMNS = ("id", "slurm_job_id", "name", "state", "reason", "nodes", "gpus_per_node", "gpu_type",
                "nodes_list", "submit_time", "start_time", "end_time", "elapsed_s", "time_limit_min",
                "restart_count", "owner__username", "team__name")
# Beyond this many branches (a lead of many teams asking for every finished state) one
# plain query is cheaper than the union; the planner then does what it can.
MAX_BRANCHES = 40


@dataclass(frozen=True)
class JobPage:
    jobs: list                   # Job instances, or dicts when the caller asked for values
    next_cursor: int | None      # pass as `after` for the following page
    previous_cursor: int | None  # pass as `before` for the page in front


@dataclass(frozen=True)
class JobFilters:
    state: str = ""              # a Slurm state, "active", "finished" or "" for any
    team_id: int | None = None
    submitted_from: datetime | None = None
    submitted_before: datetime | None = None
    states: tuple[str, ...] = ()     # any of these Slurm states (the API's comma list)
    owner_id: int | None = None


def wanted_states(filters: JobFilters) -> frozenset[str] | None:
    """The states asked for, None for any. An empty set means nothing can match."""
    asked = []
    if filters.states:
        asked.append(frozenset(filters.states))
    if filters.state:
        named = {"active": ACTIVE_STATES, "finished": ENDED_STATES}.get(filters.state, (filters.state,))
        asked.append(frozenset(named))
    return frozenset.intersection(*asked) if asked else None


def scopes(user, team_id: int | None) -> list[str]:
    """What `user` may see (within `team_id` if given), as a union of scopes that each match
    one index prefix: "owner:<id>" (one user's jobs), "team:<id>" (a team's), "all"."""
    if is_admin(user):
        return [f"team:{team_id}"] if team_id is not None else ["all"]
    led = led_team_ids(user)
    if team_id in led:
        return [f"team:{team_id}"]
    if team_id is not None:   # a team they do not lead: their own jobs in it (the filter adds the team)
        return [f"owner:{user.pk}"]
    return [f"owner:{user.pk}", *(f"team:{t}" for t in sorted(led))]


def _scope_q(scope: str) -> Q:
    kind, _, pk = scope.partition(":")
    if kind == "owner":
        return Q(owner_id=int(pk))
    if kind == "team":
        return Q(team_id=int(pk))
    return Q()   # "all"


def _common(filters: JobFilters) -> Q:
    q = Q()
    if filters.team_id is not None:
        q &= Q(team_id=filters.team_id)
    if filters.owner_id is not None:
        q &= Q(owner_id=filters.owner_id)
    if filters.submitted_from:
        q &= Q(submit_time__gte=filters.submitted_from)
    if filters.submitted_before:
        q &= Q(submit_time__lt=filters.submitted_before)
    return q


def _branches(visible: list[str], filters: JobFilters, states: frozenset[str] | None) -> list[Q]:
    parts, common = [_scope_q(scope) for scope in visible], _common(filters)
    if states is None:
        return [part & common for part in parts]
    branches = [part & common & Q(state=s) for part in parts for s in sorted(states)]
    if len(branches) > MAX_BRANCHES:
        return [reduce(or_, parts) & common & Q(state__in=sorted(states))]
    return branches


def _beyond(sort: str, cursor: int, name: str, forward: bool) -> Q:
    """Rows after the cursor job in the sort order (before it when not `forward`)."""
    if sort == "name":
        if forward:
            return Q(name__gt=name) | Q(name=name, id__gt=cursor)
        return Q(name__lt=name) | Q(name=name, id__lt=cursor)
    ascending = (sort == "oldest") == forward
    return Q(id__gt=cursor) if ascending else Q(id__lt=cursor)


def _cursor_name(user, sort: str, cursor: int) -> str | None:
    """The cursor job's name for name order; None when the user may not see that job.

    Id order needs nothing: `id < cursor` reveals no more than the rows it returns. Name
    order compares names, so a foreign job must not serve as an anchor.
    """
    if sort != "name":
        return ""
    return visible_jobs(user).filter(pk=cursor).values_list("name", flat=True).first()


def _page_keys(branches: list[Q], order: tuple[str, ...], limit: int) -> list[int]:
    keys = ("id", "name") if "name" in order else ("id",)
    parts = [Job.objects.filter(b).order_by(*order).values_list(*keys)[:limit] for b in branches]
    query = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:]).order_by(*order)[:limit]
    return [row[0] for row in query]


def _rows(ids: list[int], columns: tuple[str, ...] | None, as_values: bool) -> list:
    qs = Job.objects.filter(id__in=ids)
    if as_values:
        found = {row["id"]: row for row in qs.values(*columns)}
    else:
        qs = qs.select_related("owner", "team")
        # `columns=None`: every field but the script (the API returns whole job records).
        found = {job.id: job for job in (qs.only(*columns) if columns else qs.defer("script"))}
    return [found[i] for i in ids if i in found]


def list_jobs_page(*, user, filters: JobFilters, sort: str = "newest", after: int | None = None,
                   before: int | None = None, size: int = 50, columns: tuple[str, ...] | None = LIST_COLUMNS,
                   as_values: bool = False, visible: list[str] | None = None) -> JobPage:
    """One page of the jobs `user` may see, newest first by default.

    Keyset paging (rows beyond the cursor, LIMIT size+1) costs the same on page 1 and page
    10,000 and needs no COUNT(*). `as_values` returns dicts of `columns` instead of models.
    `visible` is `scopes(user, filters.team_id)` when the caller has it already.
    """
    states = wanted_states(filters)
    cursor, forward = (before, False) if before else (after, True)
    name = _cursor_name(user, sort, cursor) if cursor else None
    if states is not None and not states:
        return JobPage([], None, None)
    anchored = name is not None
    order = JOB_SORTS[sort] if forward else tuple(f[1:] if f[0] == "-" else f"-{f}" for f in JOB_SORTS[sort])
    branches = _branches(visible or scopes(user, filters.team_id), filters, states)
    if anchored:
        branches = [b & _beyond(sort, cursor, name, forward) for b in branches]
    ids = _page_keys(branches, order, size + 1)
    more = len(ids) > size
    ids = ids[:size] if forward else ids[:size][::-1]
    if not ids:
        return JobPage([], None, None)
    has_next = more if forward else anchored
    has_previous = anchored if forward else more
    return JobPage(_rows(ids, columns, as_values), ids[-1] if has_next else None, ids[0] if has_previous else None)
