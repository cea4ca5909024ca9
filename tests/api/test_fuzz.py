"""Fuzz every API operation from its own OpenAPI schema with ALL of schemathesis' checks.

schemathesis generates valid and invalid requests from /api/openapi.json and sends them
in-process through the WSGI app, as alice (a member of vision) and as an admin, so accepted
submissions really reach Slurm; they are cancelled afterwards. Every check runs: no 5xx,
status codes, content types, headers and bodies as documented, invalid data rejected, valid
data accepted, auth not ignored, unsupported methods refused. Examples are bounded so the
whole file stays well under 90 s.
"""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.config import SchemathesisConfig

from portal.jobs.models import Job
from portal.slurm import gateway
from portal.wsgi import application

load_all_checks()
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]

CONFIG = SchemathesisConfig.from_dict({"operations": [{
    # Which teams you are in, and which partitions and GPU types exist, is data, not schema: a
    # schema-valid submit can still be refused with a 400 whose `errors` name the fields.
    "include-path": "/api/v1/jobs", "include-method": "POST",
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409"]}},
}, {
    # Which GPU types Slurm tracks is data too: an unknown one is a 400 naming max_gpus_by_type.
    "include-path": "/api/v1/teams/{name}/policy", "include-method": "PUT",
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404"]}},
}]})
# Loaded at import: reading the schema needs no database. (schemathesis' lazy
# `from_fixture` loader does not work with pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application, config=CONFIG)


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


@pytest.fixture(params=["alice", "admin"])
def token(request, api, submitted):
    # One real job, so that ids in generated paths sometimes hit something the caller may see.
    submitted("alice")
    yield api[request.param].token
    for job in Job.objects.exclude(slurm_job_id=None):
        if not gateway.get_job(job.slurm_job_id).finished:
            gateway.cancel_job(job.owner.username, job.slurm_job_id)


@schema.parametrize()
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_the_api_does_what_its_schema_says(case, token):
    with keep_db_connection():
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=ALL_CHECKS)
    if response.status_code >= 400:
        assert "detail" in response.json(), f"{response.status_code} {case.formatted_path}: {response.text[:200]}"
    if response.status_code == 400:
        assert "errors" in response.json(), f"400 {case.formatted_path}: {response.text[:200]}"
