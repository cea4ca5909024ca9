"""Redis for the web process: every call bounded, and the cache never a dependency.

Redis frozen for a minute once hung every gunicorn worker: redis-py waits forever by
default. Every client here gives up after PORTAL_REDIS_TIMEOUT_S (connect and each reply).
A cache that fails is a miss: callers read the database, and writes are dropped (their
entries expire on their own). Counters (incr) and has_key still raise, so code that needs a
real answer from Redis (e.g. a throttle) sees the error and answers 503.
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
# One warning per this many seconds and process: an outage must not flood the log.
WARN_EVERY_S = 10.0
_last_warned = 0.0


@lru_cache(maxsize=8)
def bounded_client(url: str) -> redis.Redis:
    """A client for `url` whose connect and replies time out after PORTAL_REDIS_TIMEOUT_S."""
    timeout = settings.PORTAL_REDIS_TIMEOUT_S
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def cache_client() -> redis.Redis:
    """The cache's Redis (job-list pages, tracker memo and lock, heartbeats)."""
    return bounded_client(settings.CACHES["default"]["LOCATION"])


def _unavailable(operation: str, exc: Exception) -> None:
    global _last_warned  # noqa: PLW0603  (a process-wide rate limit)
    now = time.monotonic()
    if now - _last_warned >= WARN_EVERY_S:
        _last_warned = now
        log.warning("cache unavailable (%s treated as a miss; later failures quiet for %.0f s): %s",
                    operation, WARN_EVERY_S, exc)


class ForgivingRedisCache(RedisCache):
    """Django's Redis cache with timeouts, where a failed read is a miss and a failed write is dropped."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        timeout = settings.PORTAL_REDIS_TIMEOUT_S
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **params.get("OPTIONS", {})}
        super().__init__(server, {**params, "OPTIONS": options})

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

    def delete(self, key, version=None) -> bool:
        try:
            return super().delete(key, version)
        except redis.RedisError as exc:
            _unavailable("delete", exc)
            return False

    def delete_many(self, keys, version=None) -> None:
        try:
            super().delete_many(keys, version)
        except redis.RedisError as exc:
            _unavailable("delete_many", exc)
