"""Login throttling: wrong passwords lock an account (from any address) and an address (over any
accounts) out for a while, with a 429 that says how long; a Redis outage turns it off, not on."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client

pytestmark = pytest.mark.django_db
LOGIN = "/accounts/login/"
CACHE_URL = django_settings.CACHES["default"]["LOCATION"]  # the real one, even while a test points elsewhere


@pytest.fixture(autouse=True)
def limits(settings):
    settings.PORTAL_LOGIN_MAX_FAILURES_PER_USER = 3
    settings.PORTAL_LOGIN_MAX_FAILURES_PER_IP = 5
    settings.PORTAL_LOGIN_WINDOW_S = 60
    settings.PORTAL_LOGIN_LOCKOUT_S = 600
    forget_counters()
    yield settings
    forget_counters()  # a lock left behind would refuse later tests' logins (Redis outlives the test DB)


def forget_counters() -> None:
    """Every test starts with no counters or locks (and leaves the rest of the cache alone)."""
    client = redis.Redis.from_url(CACHE_URL)
    keys = list(client.scan_iter(match="*login-throttle:*"))
    if keys:
        client.delete(*keys)


def attempt(username: str, password: str, ip: str):
    return Client().post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


def logged_in(resp) -> bool:
    return resp.status_code == 302 and "_auth_user_id" in resp.client.session


def test_one_account_is_locked_after_failures_from_many_addresses(alice):
    answers = [attempt("alice", "wrong", f"10.0.0.{i}").status_code for i in range(1, 4)]
    assert answers == [200, 200, 429]
    locked = attempt("alice", "wrong", "10.0.0.9")
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 500
    assert "Too many attempts, try again in 10 minutes." in locked.content.decode()


def test_the_right_password_is_refused_while_the_lock_lasts(alice):
    for i in range(3):
        attempt("alice", "wrong", f"10.0.1.{i}")
    resp = attempt("alice", "pw-alice", "10.0.1.200")
    assert resp.status_code == 429 and not logged_in(resp)


def test_the_lock_ends_with_its_window(alice, limits):
    limits.PORTAL_LOGIN_LOCKOUT_S = 1
    for i in range(3):
        attempt("alice", "wrong", f"10.0.2.{i}")
    assert attempt("alice", "pw-alice", "10.0.2.9").status_code == 429
    time.sleep(1.2)
    assert logged_in(attempt("alice", "pw-alice", "10.0.2.9"))


def test_one_address_is_locked_after_failures_over_many_accounts(alice, bob):
    answers = [attempt(f"guess{i}", "wrong", "10.0.3.1").status_code for i in range(5)]
    assert answers == [200, 200, 200, 200, 429]
    assert attempt("bob", "pw-bob", "10.0.3.1").status_code == 429  # the address, not the account
    assert logged_in(attempt("bob", "pw-bob", "10.0.3.2"))


def test_other_accounts_are_unaffected(alice, bob):
    for i in range(3):
        attempt("alice", "wrong", f"10.0.4.{i}")
    assert attempt("alice", "pw-alice", "10.0.4.50").status_code == 429
    assert logged_in(attempt("bob", "pw-bob", "10.0.4.51"))


def test_usernames_are_counted_whatever_their_case(alice):
    for name in ("alice", "ALICE", "Alice "):
        attempt(name, "wrong", "10.0.5.1")
    assert attempt("alice", "pw-alice", "10.0.5.2").status_code == 429


def test_the_admin_login_is_throttled_too(admin_user):
    for i in range(3):
        attempt("admin", "wrong", f"10.0.6.{i}")
    resp = Client().post("/admin/login/", {"username": "admin", "password": "pw-admin"}, REMOTE_ADDR="10.0.6.9")
    assert resp.status_code == 200 and "_auth_user_id" not in resp.client.session


def test_an_unreachable_cache_turns_throttling_off_and_says_so(alice, settings, caplog):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}
    with caplog.at_level(logging.WARNING, logger="portal.core.login_throttle"):
        answers = [attempt("alice", "wrong", "10.0.7.1").status_code for _ in range(5)]
        assert answers == [200] * 5
        assert logged_in(attempt("alice", "pw-alice", "10.0.7.1"))
    assert "login throttling is off: the cache is unreachable" in caplog.text


def test_behind_a_proxy_the_named_header_is_the_address(alice, bob, limits):
    limits.PORTAL_CLIENT_IP_HEADER = "HTTP_X_REAL_IP"
    for i in range(5):
        Client().post(LOGIN, {"username": f"guess{i}", "password": "x"}, REMOTE_ADDR="10.9.9.9",
                      HTTP_X_REAL_IP="192.0.2.7")
    proxied = Client().post(LOGIN, {"username": "bob", "password": "pw-bob"}, REMOTE_ADDR="10.9.9.9",
                            HTTP_X_REAL_IP="192.0.2.7")
    assert proxied.status_code == 429  # that client is locked out...
    other = Client().post(LOGIN, {"username": "bob", "password": "pw-bob"}, REMOTE_ADDR="10.9.9.9",
                          HTTP_X_REAL_IP="192.0.2.8")
    assert logged_in(other)  # ...not everyone behind the same proxy
