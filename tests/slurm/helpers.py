"""Helpers for tests that run real jobs on the local cluster."""

from __future__ import annotations

import pwd
from pathlib import Path

from portal.slurm import gateway
from portal.slurm.types import JobSpec
from tests.conftest import wait_until


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def spec_for(user: str, unique: str, script: str, **extra) -> JobSpec:
    """A small job whose output lands in the user's home, named so tests never collide."""
    out = home(user) / f"portal-test-{unique}-%j.out"
    fields = {"name": f"test-{unique}", "account": extra.pop("account", "vision"),
              "script": script, "working_dir": str(home(user)), "stdout": str(out),
              "time_limit_min": 5, **extra}
    return JobSpec(**fields)


def wait_state(job_id: int, states: set[str], timeout: float = 30) -> str:
    def current():
        state = gateway.get_job(job_id).state
        return state if state in states else None
    return wait_until(current, timeout=timeout, what=f"job {job_id} to reach {sorted(states)}")


def output_of(user: str, unique: str, job_id: int) -> str:
    path = home(user) / f"portal-test-{unique}-{job_id}.out"
    wait_until(path.exists, timeout=15, what=f"{path} to appear")
    return path.read_text()
