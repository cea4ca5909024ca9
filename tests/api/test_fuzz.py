"""Fuzz every API operation from its own OpenAPI schema: no input may cause a 500.

schemathesis generates valid and invalid requests from /api/openapi.json and sends them
in-process through the WSGI app, authenticated as alice (a member of vision), so accepted
submissions really reach Slurm; they are cancelled afterwards.
"""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from portal.jobs.models import Job
from portal.slurm import gateway
from portal.wsgi import application

# Loaded at import: reading the schema needs no database. (schemathesis' lazy
# `from_fixture` loader does not work with pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)


@contextlib.contextmanager
def keep_db_connection():
    """Like Django's test client: the test's DB connection (and its transaction) must survive the request."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def alice_token(api, submitted):
    # One real job, so that ids in generated paths sometimes hit something alice may see.
    submitted("alice")
    yield api["alice"].token
    for job in Job.objects.exclude(slurm_job_id=None):
        if not gateway.get_job(job.slurm_job_id).finished:
            gateway.cancel_job(job.owner.username, job.slurm_job_id)


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_request_makes_the_api_fail(case, alice_token):
    with keep_db_connection():
        response = case.call(headers={"Authorization": f"Bearer {alice_token}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
    if response.status_code >= 400:
        assert "detail" in response.json(), f"{response.status_code} {case.formatted_path}: {response.text[:200]}"
