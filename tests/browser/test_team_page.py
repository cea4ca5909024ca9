"""The team page in a real browser: the burn-down chart and its text on a phone and a desktop,
readable contrast, live updates that keep keyboard focus and say when they stop.

Team vision of the demo cluster: its fair share is read from the real sshare (read only)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from portal.teams.models import TeamPolicy
from tests.browser.test_pages_for_people import CONTRAST_JS, PHONE, _context, _shot, _wait_for_swap
from tests.jobs.views_support import build_world, make_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("plain_static")]


@pytest.fixture
def world(transactional_db, make_user, cluster, settings):
    settings.PORTAL_TEAM_POLL_S = 1
    people = build_world(make_user)
    vision, now = people["vision"], timezone.now()
    TeamPolicy.objects.create(team=vision, gpu_hours_budget=40, budget_period="week", over_budget="soft")
    make_job(people["alice"], vision, name="finished", state="COMPLETED", start_time=now - timedelta(hours=4),
             end_time=now - timedelta(hours=1), gpus_per_node=2)
    make_job(people["bob"], vision, name="running", start_time=now - timedelta(hours=1), gpus_per_node=4)
    people["held"] = make_job(people["alice"], vision, name="capped-sweep", state="PENDING", start_time=None,
                              reason="AssocGrpGRES", slurm_job_id=None)
    return people


@pytest.mark.parametrize("width", [PHONE["width"], 1280])
def test_the_chart_its_text_and_every_table_fit_and_read_well(browser, live_server, world, width):
    page = _context(browser, live_server, world["alice"], viewport={"width": width, "height": 900}).new_page()
    page.goto(f"{live_server.url}/jobs/")
    page.get_by_role("link", name="Team", exact=True).click()          # from the nav
    page.wait_for_url("**/teams/vision/")
    chart = page.get_by_role("img", name=re.compile(r"^Burn-down of vision's GPU-hour budget"))
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute("aria-describedby", "burn-down-text")
    expect(page.locator("#burn-down-text")).to_contain_text(re.compile(r"of 40\.0 GPU-hours used \(\d+%\)"))
    box = chart.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 150
    page.get_by_text("The chart's figures, day by day").click()
    expect(page.get_by_role("region", name="GPU-hours per day").locator("tbody tr").first).to_be_visible()
    expect(page.locator("#held-jobs")).to_contain_text("Your team is using all the GPUs its limit allows at once")
    expect(page.locator("#fair-share")).to_contain_text("Fair-share factor")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate(CONTRAST_JS) == []
    _shot(page, f"team-{width}")


def test_keyboard_focus_survives_two_refreshes_and_enter_opens_the_job(browser, live_server, world):
    held = world["held"]
    page = _context(browser, live_server, world["alice"]).new_page()
    page.goto(f"{live_server.url}/teams/vision/")
    page.focus(f"#held-job-{held.pk}")
    for _ in range(2):
        _wait_for_swap(page, "#team-standing")
    assert page.evaluate("document.activeElement.id") == f"held-job-{held.pk}"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/jobs/{held.pk}/")


def test_the_page_says_when_its_figures_stop_updating(browser, live_server, world, console_errors):
    console_errors.allow(r"net::ERR_FAILED|htmx:(sendError|afterRequest)")
    page = _context(browser, live_server, world["bob"]).new_page()
    page.goto(f"{live_server.url}/teams/vision/")
    notice = page.locator("#live-stale")
    polls = re.compile(r"/teams/vision/live/")
    page.route(polls, lambda route: route.abort())
    expect(notice).to_be_visible(timeout=6_000)
    expect(notice).to_have_text(re.compile(r"^Not updated since \d\d:\d\d:\d\d \S+ — retrying$"))
    page.unroute(polls)
    expect(notice).to_be_hidden(timeout=6_000)


@pytest.mark.parametrize("width", [PHONE["width"], 1280])
def test_the_admins_team_list_sorts_by_link_and_reads_well(browser, live_server, world, width):
    page = _context(browser, live_server, world["admin"], viewport={"width": width, "height": 900}).new_page()
    page.goto(f"{live_server.url}/teams/")
    expect(page.locator("tbody tr").first).to_have_id("team-vision")          # the most GPU-hours first
    page.get_by_role("link", name="Team", exact=True).click()                 # sort by name
    page.wait_for_url("**/teams/?sort=name")
    expect(page.locator("tbody tr").first).to_have_id("team-nlp")
    expect(page.locator("th[aria-sort=ascending]")).to_have_text("Team")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate(CONTRAST_JS) == []
    _shot(page, f"teams-{width}")
    page.get_by_role("link", name="vision", exact=True).click()
    page.wait_for_url("**/teams/vision/")
    expect(page.get_by_role("link", name="Edit policy")).to_be_visible()
