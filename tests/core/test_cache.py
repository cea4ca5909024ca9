"""The cache never holds a request: a Redis that does not answer is a miss, after one bounded wait."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from django.core.cache import caches

from portal.infra.cache import CACHE_BREAKER


@pytest.fixture
def silent_redis(settings) -> Iterator[None]:
    """The cache pointed at a server that accepts connections and never answers (a frozen Redis)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        # (Django's test signals give the cache a fresh backend for the new location.)
        settings.CACHES = {"default": {**settings.CACHES["default"],
                                       "LOCATION": f"redis://127.0.0.1:{silent.getsockname()[1]}/2"}}
        yield


def timed(call):
    start = time.monotonic()
    value = call()
    return value, time.monotonic() - start


def test_a_silent_redis_is_a_miss_after_one_timeout_then_skipped(silent_redis, settings):
    cache = caches["default"]
    value, took = timed(lambda: cache.get("anything", "fallback"))
    assert value == "fallback" and took < settings.PORTAL_REDIS_TIMEOUT_S + 0.5
    assert CACHE_BREAKER.open
    _, took = timed(lambda: cache.set("anything", 1, 30))        # dropped, not raised
    assert took < 0.1
    value, took = timed(lambda: cache.get_many(["a", "b"]))
    assert value == {} and took < 0.1


def test_counters_still_say_redis_is_down(silent_redis):
    """A throttle must not count from nothing: incr raises, for the error mapping's 503."""
    with pytest.raises(redis.RedisError):
        caches["default"].incr("attempts")
