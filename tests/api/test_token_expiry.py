"""API tokens expire (PORTAL_TOKEN_DAYS), record when they were last used, and a dead token is a
clear 401 whatever the method (it used to be 403 "CSRF check Failed" on a POST)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from portal.api.models import ApiToken
from portal.api.services import issue_token, revoke_token

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_expires_after_the_configured_days(alice, settings):
    settings.PORTAL_TOKEN_DAYS = 90
    _, token = issue_token(user=alice, name="laptop")
    assert abs(token.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    settings.PORTAL_TOKEN_DAYS = 7
    _, short = issue_token(user=alice, name="ci")
    assert abs(short.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)


def test_an_expired_token_is_a_401_that_says_it_expired(alice):
    raw, token = issue_token(user=alice, name="old")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    resp = Client().get("/api/v1/jobs", headers=bearer(raw))
    assert resp.status_code == 401
    assert "expired" in resp.json()["detail"] and "new one" in resp.json()["detail"]
    assert resp["WWW-Authenticate"].startswith("Bearer")


def test_last_used_is_written_at_most_once_a_minute(alice):
    raw, token = issue_token(user=alice, name="laptop")
    client = Client()
    assert token.last_used_at is None
    assert client.get("/api/v1/jobs", headers=bearer(raw)).status_code == 200
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=10)
    client.get("/api/v1/jobs", headers=bearer(raw))
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(seconds=61))
    client.get("/api/v1/jobs", headers=bearer(raw))
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first


@pytest.mark.parametrize("token", ["cpt_not-a-real-token", "garbage", "revoked"])
def test_a_bad_or_revoked_bearer_token_on_a_post_is_401_not_a_csrf_403(alice, token):
    if token == "revoked":
        token, made = issue_token(user=alice, name="gone")
        revoke_token(user=alice, token_id=made.pk)
    resp = Client(enforce_csrf_checks=True).post("/api/v1/jobs", {"name": "x"}, content_type="application/json",
                                                 headers=bearer(token))
    assert resp.status_code == 401, resp.content
    assert "CSRF" not in resp.json()["detail"] and "not valid" in resp.json()["detail"]


def test_a_post_with_no_credentials_at_all_is_401(alice):
    resp = Client(enforce_csrf_checks=True).post("/api/v1/jobs/1/cancel")
    assert resp.status_code == 401 and "Authorization: Bearer" in resp.json()["detail"]


def test_a_logged_in_browser_still_needs_its_csrf_token_to_post(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    resp = client.post("/api/v1/jobs/1/cancel")
    assert resp.status_code == 403 and "CSRF" in resp.json()["detail"]


def test_issue_token_command_takes_a_lifetime(alice, capsys):
    call_command("issue_token", "alice", "--days", "7")
    out = capsys.readouterr()
    token = ApiToken.objects.get(user=alice)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    assert "expires" in out.err and out.out.strip().startswith(token.prefix)
    with pytest.raises(CommandError, match="1 to"):
        call_command("issue_token", "alice", "--days", "0")
