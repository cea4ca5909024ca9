"""The API tokens page: a new token is shown once, works, and stops working when revoked."""

from __future__ import annotations

import re

import pytest

from portal.api.models import ApiToken
from portal.api.services import issue_token, user_for_token
from tests.jobs.views_support import build_world, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user):
    return build_world(make_user)


def _raw(html: str) -> str:
    return re.search(r'id="raw-token" readonly value="(cpt_[\w-]+)"', html).group(1)


def test_a_new_token_is_shown_once_and_acts_as_its_owner(world):
    client = client_for(world["alice"])
    posted = client.post("/tokens/", {"name": "laptop"})
    assert posted.status_code == 302 and posted["Location"] == "/tokens/"
    resp = client.get("/tokens/")
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    raw = _raw(resp.content.decode())
    assert user_for_token(raw) == world["alice"]
    token = ApiToken.objects.get(user=world["alice"])
    assert raw not in (token.digest, token.prefix) and raw.startswith(token.prefix)
    again = client.get("/tokens/").content.decode()
    assert "laptop" in again and token.prefix in again and raw not in again


def test_it_lists_only_your_own_tokens(world):
    issue_token(user=world["bob"], name="bobs-ci")
    issue_token(user=world["alice"], name="alices-laptop")
    html = client_for(world["alice"]).get("/tokens/").content.decode()
    assert "alices-laptop" in html and "bobs-ci" not in html


def test_revoking_a_token_stops_it_working(world):
    raw, token = issue_token(user=world["alice"], name="old")
    resp = client_for(world["alice"]).post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert b"Token revoked" in resp.content and b"revoked " in resp.content
    assert user_for_token(raw) is None
    again = client_for(world["alice"]).post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert b"already revoked" in again.content


def test_you_cannot_revoke_someone_elses_token(world):
    raw, token = issue_token(user=world["bob"], name="bobs")
    assert client_for(world["alice"]).post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert client_for(world["alice"]).post("/tokens/99999999999999999999999/revoke/").status_code == 404
    assert user_for_token(raw) == world["bob"]


def test_a_token_needs_a_sensible_name(world):
    client = client_for(world["alice"])
    for name in ("", "   ", "x" * 101, "tab\there"):
        resp = client.post("/tokens/", {"name": name})
        assert resp.status_code == 400, name
        assert b'class="errors"' in resp.content
    assert not ApiToken.objects.exists()


def test_token_names_are_escaped(world):
    issue_token(user=world["alice"], name="<script>alert(1)</script>")
    html = client_for(world["alice"]).get("/tokens/").content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
