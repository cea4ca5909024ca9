"""Browser fixtures: the system chromium driven by Playwright, and the real job tracker running."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from django.db import connection
from playwright.sync_api import Browser, sync_playwright

from portal.jobs.tracking import reset_tracker, track_jobs

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def plain_static(settings):
    """Unhashed static URLs: the live server serves static files from the finders, not the manifest."""
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an asyncio loop running in this thread; Django then refuses
    # database calls from it unless told that this (test-only) mix is intended.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def tracker(transactional_db) -> Iterator[None]:
    """The real tracking service, every 0.5 s in a thread, as the Celery beat would run it."""
    reset_tracker()  # the test database is new: sweep in full at once
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.is_set():
                track_jobs()
                stop.wait(0.5)
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="tracker", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)
