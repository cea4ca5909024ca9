"""One mapping from errors to answers (portal/infra/errors.py), through real requests.

Outages of what the portal stands on (PostgreSQL, Redis as cache, the broker, Slurm) are a
503 with Retry-After: JSON under /api/, a plain page for browsers; never a 500 or a hang.
Slurm's refusals reach the user as 4xx with Slurm's words.
"""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from django.db import OperationalError as DbOperationalError
from django.db import connection
from django.test import Client, override_settings

from portal.api.services import issue_token
from portal.infra.errors import PortalError, problem_for, server_error
from portal.jobs.models import Job
from portal.slurm.errors import SlurmUnavailable
from portal.teams.models import Membership

CLOSED_CACHE = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                            "LOCATION": "redis://127.0.0.1:1/2"}}


def assert_api_outage(resp, what: str) -> None:
    assert resp.status_code == 503, resp.content
    assert resp["Content-Type"].startswith("application/json") and int(resp["Retry-After"]) > 0
    assert what in json.loads(resp.content)["detail"]


def assert_page_outage(resp, what: str) -> None:
    assert resp.status_code == 503 and int(resp["Retry-After"]) > 0
    html = resp.content.decode()
    assert resp["Content-Type"].startswith("text/html") and "Temporarily unavailable" in html and what in html
    assert "rel=\"stylesheet\"" in html and "Traceback" not in html


@pytest.fixture
def database_down():
    """The portal's database refuses connections (as a stopped postmaster does) until the test ends."""
    real_port = connection.settings_dict["PORT"]

    def stop():
        connection.close()
        connection.settings_dict["PORT"] = 1
    yield stop
    connection.settings_dict["PORT"] = real_port
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_a_503_for_the_api(alice, database_down):
    raw, _ = issue_token(user=alice, name="t")
    database_down()
    started = time.monotonic()
    resp = Client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {raw}"})
    assert_api_outage(resp, "database")
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_a_503_page_for_browsers(alice, database_down):
    browser = Client(raise_request_exception=False)
    browser.force_login(alice)
    database_down()
    assert_page_outage(browser.get("/jobs/"), "database")
    assert_page_outage(Client(raise_request_exception=False).post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice"}), "database")


@pytest.mark.urls("tests.api.outage_urls")
def test_a_cache_outage_is_a_503(settings):
    settings.CACHES = CLOSED_CACHE
    assert_api_outage(Client().get("/api/probe/cache"), "cache")
    assert_page_outage(Client().get("/probe/cache"), "cache")


@pytest.mark.urls("tests.api.outage_urls")
def test_a_broker_outage_is_a_503():
    assert_api_outage(Client().post("/api/probe/queue"), "task queue")
    assert_page_outage(Client().post("/probe/queue"), "task queue")


def test_slurm_unavailable_is_a_503_with_retry_after(api, submitted):
    data = submitted("alice")
    with override_settings(SLURM={**settings.SLURM, "REST_URL": "http://127.0.0.1:1"}):
        resp = api["alice"].post(f"/jobs/{data['id']}/hold")
    assert_api_outage(resp, "Slurm is not answering")


def test_a_job_slurm_does_not_know_is_a_404_with_slurms_words(api, submitted):
    data = submitted("alice")
    Job.objects.filter(pk=data["id"]).update(slurm_job_id=2**31 - 3)
    resp = api["alice"].post(f"/jobs/{data['id']}/hold")
    assert resp.status_code == 404
    assert "Slurm does not know it any more" in resp.json()["detail"]


def test_slurms_refusal_is_a_409_with_slurms_words(api, submitted, world):
    Membership.objects.filter(user=world["bob"]).update(role=Membership.Role.LEAD)  # in the portal only
    data = submitted("alice")
    resp = api["bob"].post(f"/jobs/{data['id']}/hold")
    assert resp.status_code == 409 and resp.json()["detail"].startswith("Slurm refused: ")


def test_errors_may_carry_extra_fields():
    assert problem_for(PortalError(503, "x", id=7)).body() == {"detail": "x", "id": 7}
    exc = SlurmUnavailable("down")
    exc.extra = {"id": 8}
    problem = problem_for(exc)
    assert problem.status == 503 and problem.body()["id"] == 8 and problem.headers["Retry-After"]


@pytest.mark.parametrize(("path", "is_api"), [("/jobs/", False), ("/api/v1/jobs", True)])
def test_an_outage_outside_any_view_is_still_a_503(rf, path, is_api):
    """handler500: e.g. saving the session after the view fails on a dead database."""
    request = rf.get(path)
    try:
        raise DbOperationalError("server closed the connection unexpectedly")
    except DbOperationalError:
        resp = server_error(request)
    if is_api:
        assert_api_outage(resp, "database")
    else:
        assert_page_outage(resp, "database")


def test_a_bug_outside_any_view_stays_a_500(rf):
    try:
        raise KeyError("a bug")
    except KeyError:
        resp = server_error(rf.get("/api/v1/jobs"))
    assert resp.status_code == 500 and "detail" in json.loads(resp.content)


@pytest.mark.django_db
def test_errors_django_makes_itself_under_the_api_are_json(alice):
    raw, _ = issue_token(user=alice, name="t")
    client = Client()
    missing = client.get("/api/v1/no-such-thing", headers={"Authorization": f"Bearer {raw}"})
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = client.delete("/api/v1/jobs", headers={"Authorization": f"Bearer {raw}"})
    assert wrong.status_code == 405 and wrong.json()["detail"] and "GET" in wrong["Allow"]
