"""The pages as people use them: keyboard, screen reader, phone, a flaky network, another time zone.

Real browser (the system chromium), real live server and database; nodes come from the real
Slurm cluster. The drain test never drains: it stops the POST at the browser, so the shared
cluster is untouched, and checks that the request leaves only after the admin confirms.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.test import Client
from playwright.sync_api import BrowserContext, Page, expect

from portal.nodes.services import sync_nodes
from tests.browser.test_researcher_flow import _submit
from tests.jobs.views_support import build_world, cancel_all, make_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("plain_static")]

PHONE = {"width": 390, "height": 844}
SHOTS = os.environ.get("PORTAL_SCREENSHOTS")  # a directory: save what each page looks like

# Every visible text against the background it is painted on; returns the failures.
CONTRAST_JS = "\n".join(line for line in (Path(__file__).parent / "contrast.js").read_text().splitlines()
                        if not line.startswith("//"))  # evaluate() needs the function first


@pytest.fixture
def world(transactional_db, make_user, cluster):
    sync_nodes()  # the Node table as the beat task would have left it, from the real cluster
    people = build_world(make_user)
    started = datetime(2026, 11, 30, 12, 3, 4, tzinfo=UTC)
    people["jobs"] = [
        make_job(people["alice"], people["vision"], name=f"resnet-sweep-{n}", start_time=started, submit_time=started,
                 nodes_list="gpu[01-02]", nodes=2, checkpoint_dir=f"/srv/portal/checkpoints/vision/alice/{n}" * 3)
        for n in range(3)]
    return people


def _context(browser, live_server, user, **options) -> BrowserContext:
    """A browser context already logged in as `user` (the session cookie of a real login)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(**options)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    return context


def _wait_for_swap(page: Page, selector: str, timeout: int = 10_000) -> None:
    """Wait until the live area `selector` has been replaced by a poll's answer."""
    # Functions, not expression strings: those go through eval, which the CSP forbids.
    page.evaluate("sel => { window.__old = document.querySelector(sel); }", selector)
    page.wait_for_function("sel => { const now = document.querySelector(sel); return now && now !== window.__old; }",
                           arg=selector, timeout=timeout)


def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_keyboard_focus_survives_two_refreshes_of_the_job_list(browser, live_server, world):
    job = world["jobs"][1]
    page = _context(browser, live_server, world["alice"]).new_page()
    page.goto(f"{live_server.url}/jobs/")
    page.focus(f"#job-link-{job.pk}")
    for _ in range(2):
        _wait_for_swap(page, "#job-rows")
    assert page.evaluate("document.activeElement.id") == f"job-link-{job.pk}"
    page.keyboard.press("Enter")  # and the keyboard still works from there
    page.wait_for_url(f"**/jobs/{job.pk}/")


def _pages(world, who: str) -> list[tuple[str, str]]:
    job = world["jobs"][0]
    pages = [("jobs", "/jobs/"), ("job", f"/jobs/{job.pk}/"), ("nodes", "/nodes/"), ("node", "/nodes/gpu01/"),
             ("tokens", "/tokens/"), ("home", "/"), ("templates", "/jobs/templates/")]
    return pages + ([("submit", "/jobs/new/")] if who != "admin" else [])  # admin is in no team: no submit


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_no_page_scrolls_sideways_on_a_phone_and_the_nav_stays_reachable(browser, live_server, world, who):
    page = _context(browser, live_server, world[who], viewport=PHONE).new_page()
    for name, path in _pages(world, who):
        page.goto(live_server.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide at {PHONE['width']}px"
        for link in (page.get_by_role("link", name="API tokens"), page.get_by_role("button", name="Log out")):
            expect(link).to_be_visible()
            expect(link).to_be_in_viewport()
        _shot(page, f"phone-{who}-{name}")
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url("**/tokens/")


@pytest.mark.parametrize("width", [390, 1280])
def test_every_text_on_every_page_meets_wcag_aa_contrast(browser, live_server, world, width):
    page = _context(browser, live_server, world["admin"], viewport={"width": width, "height": 900}).new_page()
    for name, path in _pages(world, "admin"):
        page.goto(live_server.url + path)
        assert page.evaluate(CONTRAST_JS) == [], path
        if width > 390:
            _shot(page, f"desktop-{name}")


def test_the_page_says_its_data_is_stale_while_polls_fail_and_recovers(browser, live_server, world, console_errors):
    # The failures this test causes on purpose: the browser's and htmx's own reports of them.
    console_errors.allow(r"net::ERR_FAILED|status of 503|Response Status Error Code 503")
    console_errors.allow(r"htmx:(sendError|responseError|afterRequest)")
    page = _context(browser, live_server, world["alice"]).new_page()
    page.goto(f"{live_server.url}/jobs/")
    notice = page.locator("#live-stale")
    expect(notice).to_be_hidden()
    polls = re.compile(r"/jobs/rows/")

    page.route(polls, lambda route: route.abort())  # the server stops answering
    expect(notice).to_be_visible(timeout=6_000)
    expect(notice).to_have_text(re.compile(r"^Not updated since \d\d:\d\d:\d\d \S+ — retrying$"))
    page.unroute(polls)
    expect(notice).to_be_hidden(timeout=6_000)

    page.route(polls, lambda route: route.fulfill(status=503, body="busy"))  # it answers, with an error
    expect(notice).to_be_visible(timeout=6_000)
    page.unroute(polls)
    expect(notice).to_be_hidden(timeout=6_000)

    # On a job page one live area failing is enough, even while another (the output) still answers.
    page.goto(f"{live_server.url}/jobs/{world['jobs'][0].pk}/")
    status_polls = re.compile(r"/jobs/\d+/status/")
    page.route(status_polls, lambda route: route.abort())
    expect(notice).to_be_visible(timeout=6_000)
    page.wait_for_timeout(4_000)  # several output polls succeed meanwhile
    expect(notice).to_be_visible()
    page.unroute(status_polls)
    expect(notice).to_be_hidden(timeout=6_000)


@pytest.mark.usefixtures("tracker")
def test_a_state_change_is_announced_to_screen_readers(browser, live_server, world, unique):
    page = _context(browser, live_server, world["alice"]).new_page()
    submitted: list[tuple[str, int]] = []
    try:
        job = _submit(page, live_server.url, f"announce-{unique}", "#!/bin/bash\nsleep 5\n", submitted)
        job_state_at_load = page.locator("#job-status").get_attribute("data-state")
        expect(page.locator("#live-announcer")).to_have_attribute("aria-live", "polite")
        # Whatever the state when the page loaded, it changes while the page is open (the job is
        # five seconds long), and the region then says the job's new state in the badge's words.
        page.wait_for_function(
            """([start, who]) => {
                 const now = document.querySelector("#job-status").dataset.state;
                 const said = document.querySelector("#live-announcer").textContent;
                 const label = document.querySelector("#job-state").textContent.trim();
                 return now !== start && said === who + ": now " + label;
               }""",
            arg=[job_state_at_load, f"Job {job.pk} announce-{unique}"], timeout=60_000)
    finally:
        cancel_all(submitted)


def test_times_are_shown_in_the_readers_zone_and_name_it(browser, live_server, world):
    job = world["jobs"][0]
    page = _context(browser, live_server, world["alice"], timezone_id="America/New_York").new_page()
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    started = page.locator("#job-status dt:text-is('Started') + dd time")
    expect(started).to_have_attribute("datetime", "2026-11-30T12:03:04+00:00")
    expect(started).to_have_text("Nov 30, 07:03:04 EST")
    # Without the script the server's own rendering still names its zone.
    plain = _context(browser, live_server, world["alice"], java_script_enabled=False).new_page()
    plain.goto(f"{live_server.url}/jobs/{job.pk}/")
    expect(plain.locator("#job-status dt:text-is('Started') + dd time")).to_have_text("Nov 30, 12:03:04 UTC")
    # The job list's "submitted" shows the zone too.
    page.goto(f"{live_server.url}/jobs/")
    expect(page.locator(f"#job-{job.pk} time")).to_have_text("Nov 30, 07:03 EST")


def test_node_names_on_job_pages_link_to_the_node(browser, live_server, world):
    job = world["jobs"][0]
    page = _context(browser, live_server, world["alice"]).new_page()
    page.goto(f"{live_server.url}/jobs/")
    expect(page.locator(f"#job-{job.pk} a.node-link")).to_have_text(["gpu01", "gpu02"])
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.locator("#job-status a.node-link", has_text="gpu02").click()
    page.wait_for_url("**/nodes/gpu02/")
    expect(page.get_by_role("heading", name="gpu02")).to_be_visible()


def _stop_drains(page: Page) -> list[str]:
    """Catch drain POSTs in the browser and answer them there: the real node is never drained."""
    sent: list[str] = []

    def hold(route):
        sent.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>held</title><p>held")
    page.route(re.compile(r"/nodes/[^/]+/drain/$"), hold)
    return sent


def test_drain_asks_for_confirmation_first(browser, live_server, world):
    page = _context(browser, live_server, world["admin"]).new_page()
    sent = _stop_drains(page)
    questions: list[str] = []
    answer = {"yes": False}

    def on_dialog(dialog):
        questions.append(dialog.message)
        dialog.accept() if answer["yes"] else dialog.dismiss()
    page.on("dialog", on_dialog)

    # From the node list: the row's Drain… form.
    page.goto(f"{live_server.url}/nodes/")
    _wait_for_swap(page, "#node-rows")  # just refreshed: the next poll is 3 s away, then pauses
    row = page.locator("#node-rows tr", has=page.locator("summary", has_text="Drain…")).first
    name = row.get_attribute("id").removeprefix("node-")
    row.locator("summary").click()
    row.locator("input[name=reason]").fill("browser test: never sent to Slurm")
    row.get_by_role("button", name=f"Drain {name}").click()
    page.wait_for_timeout(500)
    assert questions and f"Drain {name}?" in questions[-1]
    assert sent == [], "the drain left before the admin confirmed"
    answer["yes"] = True
    row.get_by_role("button", name=f"Drain {name}").click()
    page.wait_for_url(re.compile(r"/drain/$"))
    assert len(sent) == 1 and f"/nodes/{name}/drain/" in sent[0]

    # From the node's own page: its Drain button (the form also has Resume, which asks nothing).
    answer["yes"] = False
    page.goto(f"{live_server.url}/nodes/{name}/")
    page.fill("#id_reason", "browser test: never sent to Slurm")
    page.locator("#node-actions").get_by_role("button", name="Drain", exact=True).click()
    page.wait_for_timeout(500)
    assert len(questions) == 3 and len(sent) == 1
    answer["yes"] = True
    page.locator("#node-actions").get_by_role("button", name="Drain", exact=True).click()
    page.wait_for_url(re.compile(r"/drain/$"))
    assert len(sent) == 2


def test_a_missing_page_is_a_styled_404_with_a_way_back(browser, live_server, world, console_errors):
    console_errors.allow(r"status of 404")  # the page this test asks for on purpose
    page = _context(browser, live_server, world["bob"]).new_page()
    response = page.goto(f"{live_server.url}/jobs/{world['jobs'][0].pk}/")  # alice's job
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("link", name="API tokens")).to_be_visible()
    page.get_by_role("link", name="Your jobs").click()
    page.wait_for_url("**/jobs/")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(live_server.url + icon).status == 200
