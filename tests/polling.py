"""Polling for tests: importable without Django or Celery, so the Compose stack's tests
(docker/tests, run with -p no:django) share it with the suite's (tests/conftest.py re-exports it)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(predicate: Callable[[], object], *, timeout: float = 30, interval: float = 0.25,
               what: str = "condition"):
    """Poll until `predicate` returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
