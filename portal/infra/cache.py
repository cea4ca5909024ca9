"""Redis for the web process: every call bounded, and the cache never a dependency.

Redis frozen for a minute once hung every gunicorn worker: redis-py waits forever by
default. Every client here gives up after PORTAL_REDIS_TIMEOUT_S (connect and each reply).
A cache that fails is a miss: callers read the database, and writes are dropped (their
entries expire on their own). After a failure the cache is skipped for DOWN_S, so an
outage costs a process one timeout every few seconds, not one per cache call. Counters
(incr) and has_key still raise, so code that needs a real answer from Redis (e.g. a
throttle) sees the error and answers 503.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

log = logging.getLogger(__name__)
DOWN_S = 5.0


class Breaker:
    """Process-wide memory of a failed dependency: after a failure, skip it for `down_s`."""

    def __init__(self, name: str, down_s: float = DOWN_S) -> None:
        self.name, self.down_s, self._until = name, down_s, 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self._until

    def trip(self, what: str, exc: Exception) -> None:
        # One warning per trip: an outage must not flood the log.
        if not self.open:
            log.warning("%s unavailable (%s; skipped for %.0f s): %s", self.name, what, self.down_s, exc)
        self._until = time.monotonic() + self.down_s

    def reset(self) -> None:
        self._until = 0.0


CACHE_BREAKER = Breaker("cache")


def bounded_client(url: str, timeout: float | None = None) -> redis.Redis:
    """A client for `url` whose connect and replies time out after `timeout` (default
    PORTAL_REDIS_TIMEOUT_S)."""
    return _client(url, settings.PORTAL_REDIS_TIMEOUT_S if timeout is None else timeout)


@lru_cache(maxsize=8)
def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def cache_client(timeout: float | None = None) -> redis.Redis:
    """The cache's Redis (job-list pages, tracker memo and lock, heartbeats)."""
    return bounded_client(settings.CACHES["default"]["LOCATION"], timeout)


class _Skipped(redis.RedisError):
    """The cache is skipped after a recent failure (CACHE_BREAKER)."""


def _unavailable(operation: str, exc: Exception) -> None:
    if not isinstance(exc, _Skipped):
        CACHE_BREAKER.trip(f"{operation} treated as a miss", exc)


class ForgivingRedisCache(RedisCache):
    """Django's Redis cache with timeouts, where a failed read is a miss and a failed write is dropped."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        timeout = settings.PORTAL_REDIS_TIMEOUT_S
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **params.get("OPTIONS", {})}
        super().__init__(server, {**params, "OPTIONS": options})

    def _client(self):
        client = self.__dict__.get("_client_")
        if client is None:
            client = self.__dict__["_client_"] = self._class(self._servers, **self._options)
        return client

    @property
    def _cache(self):
        # Django's is a cached_property; this one is a plain property (to check the breaker
        # first), so it keeps the client itself.
        if CACHE_BREAKER.open:
            raise _Skipped("skipped after a recent failure")
        return self._client()

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version)
        except redis.RedisError as exc:
            _unavailable("get", exc)
            return default

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version)
        except redis.RedisError as exc:
            _unavailable("get_many", exc)
            return {}

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> None:
        try:
            super().set(key, value, timeout, version)
        except redis.RedisError as exc:
            _unavailable("set", exc)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None) -> list:
        try:
            return super().set_many(data, timeout, version)
        except redis.RedisError as exc:
            _unavailable("set_many", exc)
            return list(data)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        try:
            return super().add(key, value, timeout, version)
        except redis.RedisError as exc:
            _unavailable("add", exc)
            return False

    # Deletes invalidate what other processes would read: they are tried even while the
    # breaker is open (one process's failure may have been a blip), bounded all the same.
    def delete(self, key, version=None) -> bool:
        try:
            return bool(self._client().delete(self.make_and_validate_key(key, version=version)))
        except redis.RedisError as exc:
            _unavailable("delete", exc)
            return False

    def delete_many(self, keys, version=None) -> None:
        if not keys:
            return
        try:
            self._client().delete_many([self.make_and_validate_key(key, version=version) for key in keys])
        except redis.RedisError as exc:
            _unavailable("delete_many", exc)
