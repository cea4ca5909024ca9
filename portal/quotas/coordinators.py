"""Slurm's users and the accounts they coordinate, read incrementally for the reconciler.

Reading every coordinator (`sacctmgr show user withcoord`) makes slurmdbd 22.05 walk the
association tree once per coordinator: ~9-10 s for 1,000 coordinators among 10,000 users, most
of a reconcile run at that size (`show account withcoord` is slower still, ~15 s). Coordinator
rights change rarely, and every change is in slurmdbd's transaction log. So a run keeps a copy
(in the cache, per cluster), asks the log what changed since the copy was read (with a margin
for clocks and whole seconds), and re-reads only the users those changes name or whose accounts
they name. The users themselves (default accounts) are still read whole each run, without
coordinators (~1.4 s there).

The reconciler's own writes go into the copy as it makes them (`wrote`), and the log rows they
leave are then known as its own: without that, the run after a mass change (a thousand new
leads) would re-read every one of them. A row counts as its own only when our last write of
each pair it names was of the same kind, so its effect is the one already in the copy.

The full read runs off the reconcile path: beat's `refresh` every PORTAL_COORDINATOR_REFRESH_SECONDS
(10 min by default; it also reports what the copy missed, which only an edit of slurmdbd's
database behind its own log can cause). A full read is due with no copy (the first run, or the
cache was lost), with one older than STALE_AFTER_S (beat stopped), for more than MAX_REREAD
touched users, or for a log row it cannot attribute. The worker's runs then do not wait ~10 s
for it: they ask the worker for `refresh` and leave coordinators alone that run (everything
else is still reconciled); the command line and tests read everything at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from django.core.cache import cache

from portal.infra.handoff import hand_off
from portal.slurm import gateway
from portal.slurm.types import CoordinatorChange, SlurmUser

log = logging.getLogger(__name__)

STALE_AFTER_S = 3600
MARGIN_S = 120
MAX_REREAD = 2000
REFRESH_TASK = "workers.tasks.teams.refresh_coordinators_task"


def _key() -> str:
    # v2: the copy holds the reconciler's own writes ("own"); a copy an older portal kept is
    # not read (the first run after an upgrade reads everything).
    return f"reconcile:coordinators:v2:{gateway.cluster_name()}"


def forget() -> None:
    """The next read is a full one (tests; after restoring slurmdbd's database)."""
    cache.delete_many([_key(), _key() + ":asked"])


def current_users(*, wait_for_full_read: bool = True, ask_worker: bool = True) -> dict[str, SlurmUser] | None:
    """Every Slurm user with its default account and the accounts it coordinates. When a full
    read is due and `wait_for_full_read` is False: None, with the full read asked of the worker
    (unless `ask_worker` is False: pages leave the asking to the worker's own runs)."""
    started = time.time()
    kept = cache.get(_key())
    due = not kept or started - kept["full_at"] > STALE_AFTER_S
    changes = None if due else gateway.coordinator_changes_since(started - kept["read_at"] + MARGIN_S)
    if changes is not None:
        coords = {user: frozenset(accounts) for user, accounts in kept["coords"].items()}
        touched = _touched(coords, [c for c in changes if not _ours(c, kept["own"])])
    # A mass change: one full read is cheaper, and the names would fit no command line.
    if changes is None or len(touched) > MAX_REREAD:
        if wait_for_full_read:
            return _full(started, kept)
        if ask_worker:
            _ask_for_full_read()
        return None
    users = gateway.read_users(with_coordinators=False)
    if touched:
        fresh = gateway.read_users(with_coordinators=True, names=touched)
        for user in touched:
            coords[user] = fresh[user].coordinates if user in fresh else frozenset()
    _keep(coords, full_at=kept["full_at"], read_at=started, own=kept["own"])
    return {name: SlurmUser(name=name, default_account=user.default_account,
                            coordinates=coords.get(name, frozenset())) for name, user in users.items()}


def _ask_for_full_read() -> None:
    # Once a minute at most: beat's runs come every 30 s and the read takes ~10 s.
    if cache.add(_key() + ":asked", True, timeout=60):
        log.info("coordinators: full read asked of the worker; this run leaves coordinators alone")
        hand_off(REFRESH_TASK)


def refresh() -> dict[str, int]:
    """Read every coordinator and replace the copy (beat, every ten minutes). Returns how
    many users the copy had wrong that slurmdbd's log does not explain: anything but 0 means
    someone changed rights behind the log (the next reconcile repairs what it finds)."""
    started = time.time()
    before = cache.get(_key())
    users = _full(started, before)
    if not before:
        return {"users": len(users), "missed": 0}
    # Read after the full read, so it covers every change the full read may have seen.
    changes = gateway.coordinator_changes_since(time.time() - before["read_at"] + MARGIN_S)
    if changes is None:
        return {"users": len(users), "missed": 0}
    had = {user: frozenset(accounts) for user, accounts in before["coords"].items()}
    explained = _touched(had, [c for c in changes if not _ours(c, before["own"])])
    missed = sorted(name for name in (set(had) | set(users)) - explained
                    if had.get(name, frozenset()) != (users[name].coordinates if name in users else frozenset()))
    if missed:
        log.warning("coordinators: the copy missed changes behind slurmdbd's log for %d users (%s)",
                    len(missed), ", ".join(missed[:10]))
    return {"users": len(users), "missed": len(missed)}


def wrote(kind: str, users: Collection[str], accounts: Collection[str]) -> None:
    """Record a coordinator write Slurm took (`kind` "add" or "remove", the whole cross product
    of `users` and `accounts`): its effect goes into the copy, and the log rows it leaves are
    known as ours on the next run."""
    kept = cache.get(_key())
    if not kept:
        return   # the next run reads everything anyway
    now = time.time()
    other = "remove" if kind == "add" else "add"
    for user in users:
        held = set(kept["coords"].get(user, ()))
        held = held | set(accounts) if kind == "add" else held - set(accounts)
        kept["coords"][user] = sorted(held)
        for account in accounts:
            # Only our last write of a pair explains a row about it (see the module's docstring).
            kept["own"][other].pop((user, account), None)
            kept["own"][kind][(user, account)] = now
    _keep(kept["coords"], full_at=kept["full_at"], read_at=kept["read_at"], own=kept["own"])


def _ours(change: CoordinatorChange, own: dict[str, dict[tuple[str, str], float]]) -> bool:
    pairs = own.get(change.kind)
    return bool(pairs) and bool(change.users) and bool(change.accounts) and all(
        (user, account) in pairs for user in change.users for account in change.accounts)


def _touched(coords: dict[str, frozenset[str]], changes: list[CoordinatorChange]) -> set[str]:
    users = {user for change in changes for user in change.users}
    accounts = {account for change in changes for account in change.accounts}
    return users | {user for user, held in coords.items() if held & accounts}


def _full(started: float, before: dict | None) -> dict[str, SlurmUser]:
    users = gateway.read_users(with_coordinators=True)
    # Our writes made before this read began are in what it read; later ones may not be.
    own = {kind: {pair: at for pair, at in pairs.items() if at < started}
           for kind, pairs in (before or {}).get("own", {}).items()}
    _keep({name: user.coordinates for name, user in users.items()}, full_at=started, read_at=started, own=own)
    return users


def _keep(coords: dict, *, full_at: float, read_at: float, own: dict) -> None:
    # Rows older than the next run's window can no longer be matched: their pairs are dropped.
    oldest = read_at - 2 * MARGIN_S
    own = {kind: {pair: at for pair, at in own.get(kind, {}).items() if at >= oldest} for kind in ("add", "remove")}
    cache.set(_key(), {"coords": {user: sorted(accounts) for user, accounts in coords.items() if accounts},
                       "full_at": full_at, "read_at": read_at, "own": own}, timeout=STALE_AFTER_S * 2)
