"""Slurm's users and the accounts they coordinate, read incrementally for the reconciler.

Reading every coordinator (`sacctmgr show user withcoord`) makes slurmdbd 22.05 walk the
association tree once per coordinator: ~9-10 s for 1,000 coordinators among 10,000 users, most
of a reconcile run at that size. Coordinator rights change rarely, and every change is in
slurmdbd's transaction log. So a run keeps what the last full read found (in the cache, per
cluster), asks the log what changed since (with a margin for clocks and whole seconds), and
re-reads only the users those changes name or whose accounts they name. The users themselves
(default accounts) are still read whole each run, without coordinators (~1.3 s there).

A full read still happens when there is no copy, when the copy is older than FULL_EVERY_S,
or when the log holds a change it cannot attribute: the copy can be wrong for at most that long
only if someone edits slurmdbd's database behind its own log.
"""

from __future__ import annotations

import time

from django.core.cache import cache

from portal.slurm import gateway
from portal.slurm.types import SlurmUser

FULL_EVERY_S = 600
MARGIN_S = 120
MAX_REREAD = 2000


def _key() -> str:
    return f"reconcile:coordinators:{gateway.cluster_name()}"


def forget() -> None:
    """The next read is a full one (tests; after restoring slurmdbd's database)."""
    cache.delete(_key())


def current_users() -> dict[str, SlurmUser]:
    """Every Slurm user with its default account and the accounts it coordinates."""
    started = time.time()
    kept = cache.get(_key())
    if not kept or started - kept["full_at"] > FULL_EVERY_S:
        return _full(started)
    changes = gateway.coordinator_changes_since(started - kept["read_at"] + MARGIN_S)
    if changes is None:
        return _full(started)
    coords = {user: frozenset(accounts) for user, accounts in kept["coords"].items()}
    touched = set(changes.users) | {user for user, accounts in coords.items() if accounts & changes.accounts}
    if len(touched) > MAX_REREAD:
        return _full(started)   # a mass change: one full read is cheaper, and the names fit no command line
    users = gateway.read_users(with_coordinators=False)
    if touched:
        fresh = gateway.read_users(with_coordinators=True, names=touched)
        for user in touched:
            coords[user] = fresh[user].coordinates if user in fresh else frozenset()
    _keep(coords, full_at=kept["full_at"], read_at=started)
    return {name: SlurmUser(name=name, default_account=user.default_account,
                            coordinates=coords.get(name, frozenset())) for name, user in users.items()}


def _full(started: float) -> dict[str, SlurmUser]:
    users = gateway.read_users(with_coordinators=True)
    _keep({name: user.coordinates for name, user in users.items()}, full_at=started, read_at=started)
    return users


def _keep(coords: dict[str, frozenset[str]], *, full_at: float, read_at: float) -> None:
    cache.set(_key(), {"coords": {user: sorted(accounts) for user, accounts in coords.items() if accounts},
                       "full_at": full_at, "read_at": read_at}, timeout=FULL_EVERY_S * 2)
