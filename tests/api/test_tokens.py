"""API tokens: issued once, stored hashed, revocable; the CLI prints one."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from portal.api.models import ApiToken
from portal.api.services import issue_token, revoke_token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.django_db
def test_a_token_is_stored_only_as_a_hash(alice):
    raw, token = issue_token(user=alice, name="laptop")
    assert raw not in {token.digest, token.prefix} and raw.startswith(token.prefix)
    assert not ApiToken.objects.filter(digest=raw).exists()


@pytest.mark.django_db
def test_a_revoked_token_stops_working(alice):
    raw, token = issue_token(user=alice, name="laptop")
    client = Client()
    assert client.get("/api/v1/jobs", headers=bearer(raw)).status_code == 200
    assert revoke_token(user=alice, token_id=token.id)
    assert client.get("/api/v1/jobs", headers=bearer(raw)).status_code == 401


@pytest.mark.django_db
def test_bob_cannot_revoke_alices_token(alice, bob):
    raw, token = issue_token(user=alice, name="laptop")
    assert not revoke_token(user=bob, token_id=token.id)
    assert Client().get("/api/v1/jobs", headers=bearer(raw)).status_code == 200


@pytest.mark.django_db
def test_a_deactivated_users_token_stops_working(alice):
    raw, _ = issue_token(user=alice, name="laptop")
    alice.is_active = False
    alice.save()
    assert Client().get("/api/v1/jobs", headers=bearer(raw)).status_code == 401


@pytest.mark.django_db
def test_issue_token_command_prints_a_working_token(alice, capsys):
    call_command("issue_token", "alice")
    raw = capsys.readouterr().out.strip()
    assert Client().get("/api/v1/jobs", headers=bearer(raw)).status_code == 200


@pytest.mark.django_db
def test_issue_token_for_an_unknown_user_is_a_clear_error():
    with pytest.raises(CommandError, match="no active portal user named 'nobody-here'"):
        call_command("issue_token", "nobody-here")


@pytest.mark.django_db
def test_the_openapi_schema_lists_the_job_endpoints(client):
    schema = client.get("/api/openapi.json").json()
    paths = schema["paths"]
    for path in ["/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel",
                 "/api/v1/jobs/{job_id}/output"]:
        assert path in paths
    schemes = schema["components"]["securitySchemes"].values()
    assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes)).items()
