"""cluster/release.py: which Slurm release the local cluster runs, and the users' commands for a
release that runs from a Debian root. The live side (a whole cluster from a root) is
tests/cluster/test_release_live.py, which `make test-versions` runs on 24.11."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.test_ctl import ctl, daemon_pids
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "cluster"))
import release  # a script of cluster/, importable once its directory is on the path


def _dpkg_slurm() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "slurmctld"], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize(("text", "expected"), [
    ("slurm-wlm 24.11.5", "24.11"), ("22.05.8-4+deb12u1", "22.05"), ("slurm 26.05.5", "26.05"), ("", ""),
])
def test_a_release_is_named_by_its_major_version(text, expected):
    assert release.major(text) == expected


def test_without_a_choice_the_cluster_runs_the_hosts_own_packages():
    chosen = release.choose(None)
    assert chosen.version == _dpkg_slurm()[:5]
    assert chosen.root is None
    assert chosen.cmd(["sinfo"]) == ["sinfo"]


def test_a_release_the_host_does_not_package_runs_from_its_debian_root():
    other = "26.05" if release.host_version() != "26.05" else "24.11"
    chosen = release.choose(other)
    assert chosen.root == release.RELEASE_ROOTS / release.VERSIONS[other]
    # The root lives outside every checkout: deleting one must never walk into its bind mounts.
    assert ROOT not in chosen.root.parents
    assert chosen.cmd(["sinfo"])[:2] == ["/usr/sbin/chroot", str(chosen.root)]


def test_an_unknown_release_is_refused_with_the_choices_and_the_running_cluster_is_untouched(cluster):
    before = daemon_pids()
    proc = ctl("up", "--slurm", "23.02")
    assert proc.returncode != 0
    assert "--slurm 23.02: choose one of" in proc.stderr and "24.11" in proc.stderr and "26.05" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert daemon_pids() == before


def test_the_release_up_started_is_remembered_for_the_other_commands(tmp_path):
    (tmp_path / "etc").mkdir()
    assert release.saved(tmp_path).root is None   # nothing recorded: the host's
    started = release.Release("24.11", Path("/var/lib/portal-cluster/trixie"))
    release.save(tmp_path, started)
    assert release.saved(tmp_path) == started
    release.save(tmp_path, release.Release("22.05"))
    assert release.saved(tmp_path) == release.Release("22.05")


def _fake_root(tmp_path: Path, *clients: str) -> Path:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    for name in clients:
        (root / "usr/bin" / name).write_text("")
    return root


def test_wrappers_cover_the_roots_clients_and_never_replace_a_sites_own_tool(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setattr(release, "WRAPPER_DIR", bin_dir)
    site_tool = bin_dir / "squeue"
    site_tool.write_text("#!/bin/sh\necho the site's own squeue\n")
    root = _fake_root(tmp_path, "sinfo", "squeue", "sbatch")

    written = release.install_wrappers(release.Release("24.11", root))

    assert written == ["sinfo", "sbatch"]
    assert site_tool.read_text() == "#!/bin/sh\necho the site's own squeue\n"
    wrapper = (bin_dir / "sinfo").read_text()
    assert f'--root="{root}"' in wrapper and "/usr/bin/sinfo" in wrapper
    assert (bin_dir / "sinfo").stat().st_mode & 0o755 == 0o755
    assert not (bin_dir / "srun").exists()   # the root has none


def test_removing_wrappers_takes_only_ours(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setattr(release, "WRAPPER_DIR", bin_dir)
    (bin_dir / "squeue").write_text("#!/bin/sh\necho the site's own squeue\n")
    release.install_wrappers(release.Release("24.11", _fake_root(tmp_path, "sinfo", "sbatch")))

    assert sorted(release.remove_wrappers()) == ["sbatch", "sinfo"]
    assert sorted(p.name for p in bin_dir.iterdir()) == ["squeue"]



def test_up_after_a_reboot_ignores_the_wrappers_a_roots_cluster_left_behind(cluster):
    """A cluster from a root that was never taken `down` (the machine rebooted) leaves its client
    wrappers in /usr/local/bin. `up` on the host's release must not call its sacctmgr through
    them (the root is not mounted any more): it drops them before any client runs."""
    if release.saved(cluster / "state").root is not None:
        pytest.skip("the local cluster runs from a root: its wrappers are the right ones")
    stale = release.WRAPPER_DIR / "sacctmgr"
    if stale.exists():
        pytest.skip(f"{stale} exists (a site's own tool): the test would replace it")
    stale.write_text(release.WRAPPER.format(mark=release.WRAPPER_MARK, version="24.11",
                                            root="/nonexistent-root", name="sacctmgr"))
    stale.chmod(0o755)
    try:
        proc = ctl("up")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not stale.exists()
        assert "portal" in subprocess.run(["sacctmgr", "-n", "show", "cluster", "format=cluster"],
                                          capture_output=True, text=True, check=True).stdout
    finally:
        if stale.exists() and release.WRAPPER_MARK in stale.read_text():
            stale.unlink()
