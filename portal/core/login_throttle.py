"""Login throttling: too many wrong passwords for one account, or from one address, lock it out.

Counters live in Django's cache (Redis) with short timeouts. Each counter is a fixed window
that starts at its first failure; reaching the limit sets a lock that lasts
PORTAL_LOGIN_LOCKOUT seconds, and while it lasts no password is even checked (so a correct
one is refused too, and the lock cannot be used as a password oracle).

The check sits in the authentication backend, so every password form (the portal's login
page and Django admin's) is throttled; the login page shows the 429.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import redis.exceptions
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.http import HttpRequest

log = logging.getLogger(__name__)
# Redis down or slow; ValueError: a counter expired between add() and incr().
CACHE_ERRORS = (redis.exceptions.RedisError, OSError, ValueError)


@dataclass(frozen=True)
class Lockout:
    seconds: int

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.seconds / 60))
        return f"Too many attempts, try again in {minutes} minute{'s' if minutes != 1 else ''}."


def _keys(username: str, ip: str | None) -> list[tuple[str, int]]:
    """(cache key, limit) for each counter this attempt counts against."""
    # Hashed: usernames are user input, and cache keys must be short and printable.
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    keys = [(f"login-throttle:user:{account}", settings.PORTAL_LOGIN_MAX_FAILURES_PER_USER)]
    if ip:
        keys.append((f"login-throttle:ip:{ip}", settings.PORTAL_LOGIN_MAX_FAILURES_PER_IP))
    return keys


def client_ip(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR unless the site names a header its proxy always overwrites (e.g.
    # HTTP_X_REAL_IP): a header the client can set would let it pick a fresh "address" per try.
    return request.META.get(settings.PORTAL_CLIENT_IP_HEADER) if request is not None else None


def _remaining(lock_key: str, now: float) -> int:
    until = cache.get(lock_key)
    return max(0, math.ceil(until - now)) if until else 0


def lockout_for(username: str, ip: str | None) -> Lockout | None:
    """The lockout in force for this account or address, if any."""
    now = time.time()
    try:
        seconds = max(_remaining(key + ":lock", now) for key, _ in _keys(username, ip))
    except CACHE_ERRORS as exc:
        # Fail open: a Redis outage must not lock every user out of the portal. Passwords are
        # still checked (with a deliberately slow hash), so guessing stays expensive meanwhile.
        log.warning("login throttling is off: the cache is unreachable (%s)", exc)
        return None
    return Lockout(seconds) if seconds else None


def record_failure(username: str, ip: str | None) -> Lockout | None:
    """Count a failed login; the lockout it starts, if this failure reached a limit."""
    window, lockout = settings.PORTAL_LOGIN_WINDOW_S, settings.PORTAL_LOGIN_LOCKOUT_S
    locked = False
    try:
        for key, limit in _keys(username, ip):
            cache.add(key, 0, timeout=window)  # starts the window; no-op when it already runs
            if cache.incr(key) >= limit:
                cache.set(key + ":lock", time.time() + lockout, timeout=lockout)
                locked = True
    except CACHE_ERRORS as exc:  # see lockout_for: fail open, loudly
        log.warning("login throttling could not count a failure: the cache is unreachable (%s)", exc)
        return None
    if locked:
        log.warning("login locked for %ss after repeated failures (user %r, address %s)", lockout, username, ip)
    return Lockout(lockout) if locked else None


def forget_failures(username: str) -> None:
    """A successful login clears its account's counter (not the address's)."""
    key, _ = _keys(username, None)[0]
    try:
        cache.delete(key)
    except CACHE_ERRORS as exc:  # see lockout_for
        log.warning("login throttling could not reset a counter (%s)", exc)


class ThrottledModelBackend(ModelBackend):
    """Django's password backend behind the throttle. A locked-out attempt is refused before
    the password is checked; the login view reads `request.login_lockout` to answer 429."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self.model.USERNAME_FIELD)
        if username is None or password is None:
            return None
        ip = client_ip(request)
        lockout = lockout_for(username, ip)
        if lockout is None:
            user = super().authenticate(request, username=username, password=password, **kwargs)
            if user is not None:
                forget_failures(username)
                return user
            lockout = record_failure(username, ip)
        if request is not None and lockout is not None:
            request.login_lockout = lockout
        return None
