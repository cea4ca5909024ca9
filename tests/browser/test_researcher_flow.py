"""A researcher's day in a real browser: submit, watch it run live, read the output, cancel another.

Everything is real: the live Django server, PostgreSQL, the Slurm cluster and the job tracker
(in a thread). The page must move from Waiting/Running to Completed by itself, without a reload.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from portal.jobs.models import Job
from portal.slurm import gateway
from portal.teams.models import Membership, Team
from tests.jobs.views_support import cancel_all

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("plain_static", "tracker")]


@pytest.fixture
def people(transactional_db, slurm_accounts, make_user):
    # People first: the running tracker makes a portal user for a leftover sbatch job of alice's
    # as soon as team vision exists (see tests/jobs/views_support.build_world).
    alice, bob = make_user("alice"), make_user("bob")
    vision = Team.objects.create(name="vision")
    for user in (alice, bob):
        Membership.objects.create(user=user, team=vision)
    return {"alice": alice, "bob": bob}


@pytest.fixture
def submitted():
    made: list[tuple[str, int]] = []
    yield made
    cancel_all(made)


def _log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name=f"Welcome, {username}")).to_be_visible()


def _submit(page: Page, base: str, name: str, script: str, submitted: list) -> Job:
    page.goto(f"{base}/jobs/new/")
    page.fill("#id_name", name)
    page.fill("#id_gpus_per_node", "0")
    page.fill("#id_cpus_per_task", "1")
    page.fill("#id_mem_mb", "0")
    page.fill("#id_time_limit_min", "5")
    page.fill("#id_script", script)
    page.click("button:has-text('Submit job')")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job = Job.objects.get(pk=int(page.url.rstrip("/").rsplit("/", 1)[1]))
    submitted.append((job.owner.username, job.slurm_job_id))
    return job


def test_a_researcher_submits_watches_reads_and_cancels(browser, live_server, people, submitted, unique):
    base = live_server.url
    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    _log_in(page, base, "alice")

    # Submit a short job and watch it on its page: no reload allowed, the page updates itself.
    script = f"#!/bin/bash\nsleep 4\necho hello-from-{unique}\n"
    job = _submit(page, base, f"browser-{unique}", script, submitted)
    expect(page.locator(".msg.success")).to_contain_text(f"Slurm job {job.slurm_job_id}")
    page.evaluate("window.__same_page = true")
    state = page.locator("#job-state")
    expect(state).to_have_text("Running", timeout=60_000)
    expect(page.locator("#job-status")).to_contain_text("gpu")  # the node it runs on
    # Slurm holds a job COMPLETING until its epilog is done; with the shared 2-core machine
    # loaded by other suites, that has taken over 30 s.
    expect(state).to_have_text("Completed", timeout=90_000)
    expect(page.locator("#output-text")).to_contain_text(f"hello-from-{unique}", timeout=15_000)
    assert page.evaluate("window.__same_page") is True
    expect(page.locator("#job-status")).to_contain_text("exit code 0")

    # The job list shows it finished too.
    page.goto(f"{base}/jobs/")
    expect(page.locator(f"#job-{job.pk} .badge")).to_have_text("Completed")

    # A long job, cancelled from its page.
    long_job = _submit(page, base, f"browser-long-{unique}", "#!/bin/bash\nsleep 300\n", submitted)
    expect(page.locator("#job-state")).to_have_text("Running", timeout=60_000)
    page.click("#job-status button:has-text('Cancel')")
    expect(page.locator(".msg.success")).to_contain_text("Cancel sent to Slurm")
    expect(page.locator("#job-state")).to_have_text("Cancelled", timeout=90_000)
    assert gateway.get_job(long_job.slurm_job_id).state == "CANCELLED"
    context.close()

    # bob, in the same team, cannot open alice's job.
    browser.allow_console(r"status of 404 .*/jobs/\d+/")  # the browser reports the 404 this part asks for
    context = browser.new_context()
    page = context.new_page()
    _log_in(page, base, "bob")
    response = page.goto(f"{base}/jobs/{job.pk}/")
    assert response.status == 404
    page.goto(f"{base}/jobs/")
    expect(page.locator(f"#job-{job.pk}")).to_have_count(0)
    context.close()
