"""The sensors' report client: portal URLs, and a portal that accepts but never answers."""

from __future__ import annotations

import socket

import pytest

from slurm_plugins.report import split_url
from tests.slurm_plugins.helpers import healthy_gpus, run_hook, spool_files, write_config


@pytest.mark.parametrize(("url", "parts"), [
    ("http://127.0.0.1:8000", ("http", "127.0.0.1:8000", "127.0.0.1", 8000, "")),
    ("https://portal.example.org/", ("https", "portal.example.org", "portal.example.org", 443, "")),
    ("https://hpc.example.org/portal/", ("https", "hpc.example.org", "hpc.example.org", 443, "/portal")),
    ("http://[::1]:8000", ("http", "[::1]:8000", "::1", 8000, "")),
])
def test_portal_urls_are_understood(url, parts):
    assert split_url(url) == parts


def test_a_portal_url_that_is_not_http_is_refused():
    with pytest.raises(ValueError, match="not http"):
        split_url("ftp://portal")


def test_a_portal_that_never_answers_counts_as_down(cluster, tmp_path):
    """A hung portal (the connection is accepted, no answer comes) must not hold a prolog:
    after the timeout the report is spooled and the job starts."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        healthy_gpus(tmp_path / "gpu", "gpu07")
        conf = write_config(tmp_path, portal_url=url)
        proc = run_hook("prolog", "gpu07", conf, env={"SLURM_JOB_ID": "31"})
    assert proc.returncode == 0, proc.stderr
    assert "timed out" in (tmp_path / "nodes/gpu07/sensor.log").read_text()
    assert len(spool_files(tmp_path, "gpu07")) == 1
