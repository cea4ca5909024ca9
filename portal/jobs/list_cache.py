"""Job-list API pages cached in Redis until a job they could show changes.

Live lists poll every second or two, and nearly every poll finds nothing new. A page is
cached under its query plus the version counters of the scopes it reads from
(`listing.scopes`):

- `owner:<id>`: one user's own jobs;
- `team:<id>`: a team's jobs (a lead's view, or a team filter);
- `all`: every job (an admin's unfiltered view).

Every writer of job rows calls `changed()` with the rows' (owner, team) pairs once its
transaction has committed; the counters move and the next poll rebuilds the page. Versions
are read before the page is built, so a cached page is never older than its versions say. A
writer that forgot to call `changed()` (an edit in Django's admin) would leave a page stale,
so entries also expire after `PORTAL_JOB_LIST_CACHE_SECONDS` (0 turns the cache off).

The cache is an optimisation, never a dependency: with Redis unreachable a page is built
from the database, and a writer's notice is logged and dropped (the pages it would have
invalidated expire on their own).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable

import redis
from django.conf import settings
from django.db import connection

from portal.infra.cache import CACHE_BREAKER, cache_client
from portal.jobs.listing import JobFilters, scopes

VERSIONS_TTL_S = 7 * 24 * 3600
log = logging.getLogger(__name__)


def _redis() -> redis.Redis:
    # Short timeouts: a hung Redis must cost a poll a second at most, not the request.
    return cache_client()


def _prefix() -> str:
    # One namespace per database: test and benchmark databases must not share pages.
    return f"portal:joblist:{connection.settings_dict['NAME']}:"


def page(user, filters: JobFilters, query: tuple, build: Callable[[list[str]], bytes]) -> bytes:
    """The page body for this user and query: from the cache, or built and cached.

    `build(visible)` makes the page from the user's scopes (computed here once, for both).
    """
    visible = scopes(user, filters.team_id)
    ttl = settings.JOB_LIST_CACHE_SECONDS
    if ttl <= 0:
        return build(visible)
    if CACHE_BREAKER.open:   # Redis failed a moment ago: do not wait on it again yet
        return build(visible)
    client, prefix = _redis(), _prefix()
    try:
        versions = client.mget([prefix + "v:" + scope for scope in visible])
        identity = repr((user.pk, visible, versions, filters, query)).encode()
        key = prefix + "p:" + hashlib.sha256(identity).hexdigest()
        body = client.get(key)
    except redis.RedisError as exc:
        CACHE_BREAKER.trip("job list pages read from the database", exc)
        return build(visible)
    if body is None:
        body = build(visible)
        with contextlib.suppress(redis.RedisError):
            client.set(key, body, ex=ttl)
    return body


def changed(pairs: Iterable[tuple[int, int]]) -> None:
    """Jobs of these (owner id, team id) pairs were written: pages showing them are stale."""
    scopes = {"all"}
    for owner_id, team_id in pairs:
        scopes.update((f"owner:{owner_id}", f"team:{team_id}"))
    if len(scopes) == 1:
        return
    prefix = _prefix()
    try:
        with _redis().pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.incr(prefix + "v:" + scope)
                pipe.expire(prefix + "v:" + scope, VERSIONS_TTL_S)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("job list cache not told of changed jobs (pages expire in %s s): %s",
                    settings.JOB_LIST_CACHE_SECONDS, exc)


def clear() -> None:
    """Forget every cached page and version of this database (tests start clean)."""
    client = _redis()
    keys = list(client.scan_iter(match=_prefix() + "*", count=1000))
    if keys:
        client.delete(*keys)
