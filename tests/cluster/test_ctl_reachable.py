"""`cluster/ctl up` with a checkout Slurm cannot read fails at once and says how to fix it
(it used to wait 60 s, then say "timed out waiting for slurmdbd")."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.cluster.ctl_module import load_ctl


@pytest.fixture
def locked():
    """A checkout under a mode-700 directory, like one cloned into /root. In /tmp itself:
    pytest's tmp_path is under /tmp/pytest-of-root, which is mode 700 already."""
    home = Path(tempfile.mkdtemp(prefix="root-like-"))
    (home / "portal/cluster/state").mkdir(parents=True)
    home.chmod(0o700)
    yield home
    shutil.rmtree(home)


def test_it_names_the_directory_slurm_cannot_enter(locked):
    assert load_ctl().unreachable_by(locked / "portal/cluster/state", "slurm") == locked


def test_a_reachable_state_directory_passes():
    ctl = load_ctl()
    assert ctl.unreachable_by(ctl.STATE, "slurm") is None
    assert ctl.unreachable_by(ctl.STATE, "nobody") is None


def test_up_stops_at_once_with_the_fix(locked, capsys):
    ctl = load_ctl()
    ctl.STATE = locked / "portal/cluster/state"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        ctl.check_state_reachable()
    assert exit_info.value.code == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert f"{locked} is mode 700" in err
    assert f"chmod o+x {locked}" in err
    assert "user slurm" in err
