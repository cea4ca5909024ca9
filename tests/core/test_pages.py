"""The login page, the home page and the health endpoint."""

from __future__ import annotations

import pytest
from django.test import Client

from portal.teams.models import Membership, Team

pytestmark = pytest.mark.django_db


def test_the_login_page_has_a_csrf_protected_form(client):
    resp = client.get("/accounts/login/")
    assert resp.status_code == 200
    assert b"csrfmiddlewaretoken" in resp.content
    assert b'name="password"' in resp.content


def test_home_needs_a_login(client):
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp["Location"].startswith("/accounts/login/")


def test_alice_logs_in_and_sees_her_team(client, alice):
    Membership.objects.create(user=alice, team=Team.objects.create(name="vision"))
    resp = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"}, follow=True)
    assert resp.status_code == 200
    assert b"Welcome, alice" in resp.content
    assert b"vision" in resp.content


def test_a_wrong_password_is_refused_plainly(client, alice):
    resp = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert resp.status_code == 200
    assert b"did not match" in resp.content


def test_team_descriptions_are_escaped(client, alice):
    team = Team.objects.create(name="vision", description="<script>alert(1)</script>")
    Membership.objects.create(user=alice, team=team)
    client.force_login(alice)
    resp = client.get("/")
    assert b"<script>alert(1)</script>" not in resp.content
    assert b"&lt;script&gt;" in resp.content


def test_login_without_csrf_token_is_rejected(alice):
    strict = Client(enforce_csrf_checks=True)
    resp = strict.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert resp.status_code == 403


def test_health_reports_every_dependency(client, cluster):
    """The background parts (worker, beat, ...) are tests/core/test_liveness.py's."""
    resp = client.get("/healthz")
    checks = resp.json()["checks"]
    assert {name: checks[name] for name in ("database", "broker", "slurm")} == \
        {"database": "ok", "broker": "ok", "slurm": "ok"}


def test_health_says_degraded_when_slurm_is_unreachable(client, settings):
    settings.SLURM = {**settings.SLURM, "REST_URL": "http://127.0.0.1:1", "TIMEOUT_S": 1.0}
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["slurm"].startswith("error:")
