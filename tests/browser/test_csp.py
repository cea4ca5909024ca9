"""Content-Security-Policy: on every response, and the pages (Swagger UI at /api/docs included)
work under it in a real browser, with no violation reported."""

from __future__ import annotations

import pytest
from django.test import Client

from portal.api.services import issue_token

EXPECTED = ["default-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'",
            "object-src 'none'", "base-uri 'self'", "form-action 'self'", "style-src-attr 'unsafe-inline'"]


def csp_of(response) -> list[str]:
    return [part.strip() for part in response["Content-Security-Policy"].split(";")]


@pytest.mark.django_db
def test_every_kind_of_response_carries_the_policy(alice):
    anonymous, browser_client = Client(), Client()
    browser_client.force_login(alice)
    raw, _ = issue_token(user=alice, name="csp")
    responses = [anonymous.get("/accounts/login/"), anonymous.get("/"), browser_client.get("/tokens/"),
                 browser_client.get("/jobs/"), browser_client.get("/no/such/page"), anonymous.get("/api/docs"),
                 anonymous.get("/api/openapi.json"), anonymous.get("/api/v1/jobs"),
                 Client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {raw}"})]
    for resp in responses:
        policy = csp_of(resp)
        for directive in EXPECTED:
            assert directive in policy, (resp.request["PATH_INFO"], policy)
        script = next(d for d in policy if d.startswith("script-src")).split()
        # Only our own files run: no inline script, no other origin ('unsafe-eval': see settings).
        assert script[:2] == ["script-src", "'self'"] and set(script[2:]) <= {"'unsafe-eval'"}


def _watch(page) -> list[str]:
    problems: list[str] = []
    # A missing favicon is another change's business; a 404 for anything else is a problem.
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.on("console", lambda msg: problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return problems


def _log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("plain_static")
def test_pages_and_the_api_docs_work_under_the_policy(live_server, browser, alice):
    context = browser.new_context()
    page = context.new_page()
    problems = _watch(page)
    _log_in(page, live_server.url, "alice")
    for path in ("/jobs/", "/nodes/", "/tokens/"):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
    page.goto(f"{live_server.url}/api/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)  # the operations rendered
    assert page.locator(".opblock-summary-path").count() >= 5
    context.close()
    assert not problems, problems


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("plain_static")
def test_the_django_admin_works_under_the_policy(live_server, browser, admin_user):
    context = browser.new_context()
    page = context.new_page()
    problems = _watch(page)
    _log_in(page, live_server.url, "admin")
    for path in ("/admin/", "/admin/auth/user/", f"/admin/auth/user/{admin_user.pk}/change/"):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
    context.close()
    assert not problems, problems
