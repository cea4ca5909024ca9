"""The issue-9 pages in a real browser: email settings by keyboard, the Runs section and the
reliability page on a phone, live updates that keep focus, and readable contrast."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from portal.nodes.services import sync_nodes
from portal.recovery.models import NotificationSettings
from tests.browser.test_pages_for_people import CONTRAST_JS, PHONE, _context, _shot, _wait_for_swap
from tests.jobs.views_support import build_world
from tests.recovery.page_support import requeued_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("plain_static")]


@pytest.fixture
def world(transactional_db, make_user, settings, cluster):
    settings.PORTAL_RELIABILITY_CACHE_S = 0
    sync_nodes()  # the Node table from the real cluster (read only), so node links lead somewhere
    people = build_world(make_user)
    job, _, second = requeued_job(people["alice"], people["vision"], timezone.now() - timedelta(hours=3))
    # Still running its second run: the status area (and the Runs section in it) keeps polling.
    job.state, job.end_time = "RUNNING", None
    job.save(update_fields=["state", "end_time"])
    second.ended_at, second.outcome = None, ""
    second.save(update_fields=["ended_at", "outcome"])
    people["job"] = job
    return people


def _no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width}px wide at {PHONE['width']}px"


def test_emails_can_be_switched_off_with_the_keyboard_on_a_phone(browser, live_server, world):
    page = _context(browser, live_server, world["alice"], viewport=PHONE).new_page()
    page.goto(f"{live_server.url}/jobs/")
    page.get_by_role("link", name="Emails").click()
    page.wait_for_url("**/settings/notifications/")
    _no_sideways_scroll(page)
    requeue = page.get_by_label("When the portal requeues my job after a node failure")
    expect(requeue).to_be_checked()
    requeue.focus()
    page.keyboard.press("Space")           # untick by keyboard
    expect(requeue).not_to_be_checked()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")             # past the two other boxes to Save
    expect(page.get_by_role("button", name="Save")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    expect(page.get_by_label("When the portal requeues my job after a node failure")).not_to_be_checked()
    saved = NotificationSettings.objects.get(user=world["alice"])
    assert (saved.on_requeue, saved.on_hold, saved.on_failure) == (False, True, True)
    _shot(page, "phone-email-settings")


def test_the_runs_section_works_on_a_phone_and_keeps_focus_through_live_updates(browser, live_server, world):
    page = _context(browser, live_server, world["alice"], viewport=PHONE, timezone_id="America/New_York").new_page()
    page.goto(f"{live_server.url}/jobs/{world['job'].pk}/")
    runs = page.locator("#job-runs")
    expect(runs.get_by_role("heading", name="Runs")).to_be_visible()
    expect(runs.locator("#run-1")).to_contain_text("Requeued by the portal")
    expect(runs.locator("#run-2")).to_contain_text("still running")
    expect(runs).to_contain_text("0.67 GPU-hours lost")
    expect(runs.locator("#run-1 dt:text-is('Started') + dd time")).to_contain_text("EST")  # the reader's zone
    _no_sideways_scroll(page)
    failed_node = runs.locator("#run-1 dt:text-is('Failed node') + dd a")
    failed_node.focus()
    for _ in range(2):
        _wait_for_swap(page, "#job-status")
        # portal.js puts focus back once the swap settles (htmx's settle delay, 20 ms).
        page.wait_for_function("() => document.activeElement.textContent === 'gpu03'", timeout=1000)
    assert page.evaluate("() => document.activeElement.closest('#run-1') !== null")
    page.keyboard.press("Enter")
    page.wait_for_url("**/nodes/gpu03/")
    _shot(page, "phone-job-runs")


@pytest.mark.parametrize("width", [390, 1280])
def test_the_reliability_page_reads_well(browser, live_server, world, width):
    page = _context(browser, live_server, world["alice"], viewport={"width": width, "height": 900}).new_page()
    page.goto(f"{live_server.url}/jobs/")
    page.get_by_role("link", name="Reliability").click()
    page.wait_for_url("**/reliability/")
    chart = page.get_by_role("list", name="Goodput and ETTR per team")
    expect(chart.get_by_role("img", name="Goodput 83 percent").first).to_be_visible()
    # Run 1 only (run 2 is still going): 4 GPUs x 60 min, 40 GPU-minutes lost. No job ended: no ETTR.
    expect(page.locator("tr[data-team='vision'] td.goodput")).to_have_text("0.833")
    expect(chart.get_by_role("img", name="ETTR unknown").first).to_be_attached()
    # The day-by-day charts drew (Chart.js, from the page's JSON), one line per team and the cluster's.
    page.wait_for_function("() => document.getElementById('ettr-trend').chart !== undefined")
    labels = page.evaluate("() => document.getElementById('goodput-trend').chart.data.datasets.map(d => d.label)")
    assert labels == ["vision", "Whole cluster"]
    assert page.locator("#goodput-trend").bounding_box()["width"] > 200
    assert page.evaluate(CONTRAST_JS) == []
    if width == 390:
        _no_sideways_scroll(page)
    _shot(page, f"reliability-{width}")
    for path in ("/settings/notifications/", f"/jobs/{world['job'].pk}/"):
        page.goto(live_server.url + path)
        assert page.evaluate(CONTRAST_JS) == [], path
