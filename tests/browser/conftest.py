"""Browser fixtures: the system chromium driven by Playwright, and the real job tracker running.

Every page any browser test opens is watched: a console error or an uncaught script error
fails the test, unless the test expects it (`console_errors.allow(...)`, e.g. a poll it makes
fail on purpose).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator

import pytest
from django.db import connection
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, sync_playwright

from portal.jobs.tracking import reset_tracker, track_jobs

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def plain_static(settings):
    """Unhashed static URLs: the live server serves static files from the finders, not the manifest."""
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


class ConsoleErrors:
    """What the pages said on their consoles at error level, and what the test expects to see."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console error: {message.text} (at {message.location.get('url', '?')})")

    def on_page_error(self, error) -> None:
        self.seen.append(f"uncaught error: {error.error}")

    def unexpected(self) -> list[str]:
        return [line for line in self.seen if not any(p.search(line) for p in self.allowed)]


class WatchedBrowser:
    """The session's browser; every context it makes reports its pages' errors to one ConsoleErrors."""

    def __init__(self, browser: Browser, errors: ConsoleErrors) -> None:
        self._browser = browser
        self._errors = errors

    def new_context(self, **options) -> BrowserContext:
        context = self._browser.new_context(**options)
        context.on("console", self._errors.on_console)
        context.on("weberror", self._errors.on_page_error)
        return context

    def allow_console(self, pattern: str) -> None:
        self._errors.allow(pattern)

    def __getattr__(self, name: str):
        return getattr(self._browser, name)


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
def browser(_chromium: Browser, console_errors: ConsoleErrors) -> Iterator[WatchedBrowser]:
    yield WatchedBrowser(_chromium, console_errors)
    unexpected = console_errors.unexpected()
    if unexpected:
        pytest.fail("the pages logged errors:\n" + "\n".join(unexpected), pytrace=False)


@pytest.fixture(scope="session")
def _chromium() -> Iterator[Browser]:
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
