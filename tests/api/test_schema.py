"""What schemathesis found in the schema, pinned: every error answer documented, the
Idempotency-Key and state patterns in the schema, dates only as ISO strings, 400s with `errors`."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from portal.jobs.api import STATES


@pytest.fixture(scope="module")
def openapi():
    return Client().get("/api/openapi.json").json()


def _pattern(operation: dict, name: str) -> str:
    schema = next(p for p in operation["parameters"] if p["name"] == name)["schema"]
    return next(s["pattern"] for s in schema.get("anyOf", [schema]) if "pattern" in s)


def test_every_operation_documents_its_error_answers(openapi):
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "503" in responses, (method, path)
            if operation.get("security"):
                assert "401" in responses, (method, path)
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in responses, (method, path)
            if "400" in responses:
                body = responses["400"]["content"]["application/json"]["schema"]
                assert "errors" in body["required"], (method, path)


def test_the_idempotency_key_and_state_filter_are_described(openapi):
    key = _pattern(openapi["paths"]["/api/v1/jobs"]["post"], "Idempotency-Key")
    assert re.fullmatch(key, "click-1") and not re.fullmatch(key, "a b")
    pattern = _pattern(openapi["paths"]["/api/v1/jobs"]["get"], "state")
    for good in ("PENDING", "running", "PENDING,RUNNING", ",".join(sorted(STATES))):
        assert re.fullmatch(pattern, good), good
    for bad in ("EXPLODED", "PENDING,", "", "PENDING RUNNING"):
        assert not re.fullmatch(pattern, bad), bad


@pytest.mark.django_db
@pytest.mark.parametrize(("params", "status"), [
    ({"submitted_after": "1700000000"}, 422), ({"submitted_before": "17"}, 422),
    ({"submitted_after": "2026-11-30T12:00:00Z"}, 200), ({"submitted_after": "2026-11-30"}, 200),
    ({"state": "EXPLODED"}, 422), ({"state": "pending,RUNNING"}, 200),
])
def test_list_filters_accept_exactly_what_the_schema_says(api, params, status):
    resp = api["alice"].get("/jobs", **params)
    assert resp.status_code == status, resp.content
    if status == 422:
        assert resp.json()["detail"] and resp.json()["errors"]


@pytest.mark.django_db
def test_a_bad_idempotency_key_is_refused_before_anything_is_made(api):
    resp = api["alice"].post("/jobs", {"name": "x", "team": "vision", "script": "#!/bin/bash\ntrue\n"},
                             headers={"Idempotency-Key": "no spaces please"})
    assert resp.status_code == 422 and resp.json()["errors"]


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_a_400_with_errors(api):
    resp = api["alice"].client.post("/api/v1/jobs", "{not json", content_type="application/json",
                                    headers=api["alice"].headers)
    assert resp.status_code == 400
    assert resp.json() == {"detail": "Cannot parse request body", "errors": {}}
