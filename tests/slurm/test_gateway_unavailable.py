"""When slurmrestd is gone or hangs, callers get SlurmUnavailable quickly, never a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmUnavailable
from portal.slurm.types import JobSpec
from tests.conftest import ROOT, wait_until


@pytest.fixture
def silent_server():
    """A socket that accepts connections and never answers: a hung slurmrestd."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_a_hung_slurmrestd_times_out_as_unavailable(settings, silent_server):
    settings.SLURM = {**settings.SLURM, "REST_URL": silent_server, "TIMEOUT_S": 1.0}
    started = time.monotonic()
    with pytest.raises(SlurmUnavailable, match="did not answer"):
        gateway.list_nodes()
    assert time.monotonic() - started < 5


def test_stopped_slurmrestd_raises_unavailable_and_recovers(cluster):
    pid_file = ROOT / "cluster/state/run/slurmrestd.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10, what="slurmrestd to stop")
        started = time.monotonic()
        with pytest.raises(SlurmUnavailable, match="cannot reach slurmrestd"):
            gateway.submit_job("alice", _spec())
        assert time.monotonic() - started < 5
    finally:
        subprocess.run([str(ROOT / "cluster/ctl"), "up"], check=True, capture_output=True)
    assert gateway.ping() < 5


def _spec():
    return JobSpec(name="never-sent", account="vision", script="#!/bin/bash\ntrue\n", working_dir="/tmp")
