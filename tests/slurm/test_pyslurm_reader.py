"""Contract tests for the optional pyslurm read path.

PyPI's only current pyslurm (25.11) builds only against Slurm 25.11 headers, and no
registry reachable here serves Slurm 25.11; the local cluster runs Debian's 22.05, 24.11 or 26.05. Where
pyslurm cannot be imported these tests skip with exactly that reason.
"""

from __future__ import annotations

import subprocess

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmUnavailable
from portal.slurm.readers import CliRestReader, PyslurmReader

try:
    import pyslurm  # noqa: F401
    HAVE_PYSLURM = True
except ImportError:
    HAVE_PYSLURM = False


def _cluster_release() -> str:
    out = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return out[-1] if out else "unknown"


SKIP_REASON = ("pyslurm cannot be imported: PyPI's only current pyslurm (25.11) builds only "
               f"against Slurm 25.11 headers, which no registry here serves (cluster: Slurm {_cluster_release()})")



def default_reader() -> CliRestReader:
    return CliRestReader(gateway.as_operator, gateway.cli)


needs_pyslurm = pytest.mark.skipif(not HAVE_PYSLURM, reason=SKIP_REASON)


@pytest.mark.skipif(HAVE_PYSLURM, reason="pyslurm is installed here")
def test_choosing_pyslurm_without_it_fails_clearly(settings):
    settings.SLURM = {**settings.SLURM, "READ_BACKEND": "pyslurm"}
    with pytest.raises(SlurmUnavailable, match="pyslurm cannot be imported"):
        gateway.list_nodes()


@needs_pyslurm
def test_pyslurm_lists_the_same_nodes_as_the_default_reader(cluster):
    default = {n.name: (n.state, n.gpus) for n in default_reader().list_nodes()}
    via_pyslurm = {n.name: (n.state, n.gpus) for n in PyslurmReader().list_nodes()}
    assert via_pyslurm == default


@needs_pyslurm
def test_pyslurm_lists_the_same_partitions(cluster):
    default = {p.name: p.max_time_min for p in default_reader().list_partitions()}
    assert {p.name: p.max_time_min for p in PyslurmReader().list_partitions()} == default
