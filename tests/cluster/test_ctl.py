"""./cluster/ctl: status, idempotent up, and plain Slurm commands from any shell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.cluster.ctl_module import load_ctl
from tests.conftest import ROOT

CTL = str(ROOT / "cluster/ctl")


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CTL, *args], capture_output=True, text=True, check=False, timeout=180)


def daemon_pids() -> dict[str, str]:
    pids = {}
    for line in ctl("status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "running," and parts[2] == "pid":
            pids[parts[0]] = parts[3]
    return pids


def test_status_lists_every_daemon_running(cluster):
    pids = daemon_pids()
    expected = {"slurmdbd", "slurmctld", "slurmrestd"} | {f"slurmd-gpu0{i}" for i in range(1, 9)}
    assert expected | {"slurmd-cpu01", "slurmd-cpu02"} <= set(pids)


def test_up_twice_is_harmless(cluster):
    before = daemon_pids()
    proc = ctl("up")
    assert proc.returncode == 0, proc.stderr
    assert daemon_pids() == before   # nothing restarted


def test_plain_slurm_commands_work_from_a_shell(cluster):
    out = subprocess.run(["sinfo", "-h", "-o", "%P %D"], capture_output=True, text=True, check=True).stdout
    assert "gpu* 8" in out and "cpu 2" in out
    out = subprocess.run(["bash", "-lc", "sacctmgr -n -P show cluster format=cluster"],
                         capture_output=True, text=True, check=True).stdout
    assert "portal" in out.split()


def test_unknown_command_is_a_clear_cli_error():
    proc = ctl("explode")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


def _loopback_routes() -> str:
    return subprocess.run(["ip", "route", "show", "table", "local"], capture_output=True, text=True,
                          check=True).stdout


def test_up_makes_loopback_ack_at_once_and_puts_it_back_when_someone_took_it_away(cluster):
    """Slurm 22.05's RPCs stall ~40 ms a round trip on delayed ACKs without it (bench/reconcile_scale.py)."""
    from bench.common import set_loopback_quickack  # noqa: PLC0415 - the bench's own switch

    set_loopback_quickack(False)
    try:
        assert "quickack 1" not in _loopback_routes()
        proc = ctl("up")
        assert proc.returncode == 0, proc.stderr
        assert "loopback quickack on 127.0.0.0/8" in proc.stdout + proc.stderr
    finally:
        routes = _loopback_routes()
        if "quickack 1" not in routes:
            set_loopback_quickack(True)
    lines = [line for line in routes.splitlines() if line.startswith(("local 127.0.0.0/8 ", "local 127.0.0.1 "))]
    assert len(lines) == 2 and all("quickack 1" in line for line in lines), routes


def _lookalike_slurmctld(config: str, root: Path | None = None, *, own_mounts: bool = False) -> subprocess.Popen:
    """A process that looks like a local-cluster slurmctld of a deleted checkout (its name and its
    -f path): bash waiting on its stdin, on this machine's root, chrooted into `root`, or in a
    mount namespace of its own (as in a container; nothing is mounted there, so nothing leaks)."""
    command = ["/bin/bash", "-c", f'exec -a slurmctld /bin/bash -c "read -t 60" bash -f {config}']
    if root is not None:
        command = ["chroot", str(root), *command]
    if own_mounts:
        command = ["unshare", "--mount", "--propagation", "unchanged", *command]
    return subprocess.Popen(command, stdin=subprocess.PIPE)


def _bash_root(root: Path) -> Path:
    """A root holding only bash and the libraries it loads: no mount needed to chroot into it."""
    loaded = subprocess.run(["ldd", "/bin/bash"], capture_output=True, text=True, check=True).stdout
    needed = ["/bin/bash", *re.findall(r"(/\S+\.so[.\d]*) \(0x", loaded)]
    for path in needed:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(path), dest)
    return root


def test_orphan_cleanup_stops_a_deleted_checkouts_daemon_but_never_one_in_another_root(tmp_path):
    """`up` kills slurm daemons of a checkout whose pid files are gone; a daemon in another root or
    mount namespace (a container, a fresh host of cluster/freshhost.py) has pid files we cannot
    see, so it stays."""
    config = str(tmp_path / "gone/cluster/state/etc/slurm.conf")
    ours = _lookalike_slurmctld(config)
    theirs = [_lookalike_slurmctld(config, _bash_root(tmp_path / "root")),
              _lookalike_slurmctld(config, own_mounts=True)]
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_named(p.pid) for p in (ours, *theirs)):
            time.sleep(0.1)
        load_ctl().stop_orphans()
        assert ours.wait(timeout=10) == -9
        time.sleep(0.5)
        assert [p.poll() for p in theirs] == [None, None], "a daemon in another root or mount namespace was killed"
    finally:
        for proc in (ours, *theirs):
            proc.kill()
            proc.wait()


def _named(pid: int) -> bool:
    """The process (or its exec'd child: unshare and chroot exec in place) runs as slurmctld."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"slurmctld\0")
    except OSError:
        return False
