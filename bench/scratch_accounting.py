"""A throw-away slurmdbd and slurmctld, for benchmarks that write thousands of accounting objects.

Why: slurmdbd 22.05 renumbers the association tree (`lft`/`rgt`) for every association it
removes, so removing 11,000 bench associations from the local cluster's slurmdbd is quadratic:
hours of MariaDB work, and killing it leaves a rollback of hours more. A scratch pair of daemons
with a database of its own is removed with one DROP DATABASE instead.

What it runs is the local cluster's own configuration (cluster/state/etc, written by
`cluster/ctl up`), with only these changed: ClusterName `benchacct`, slurmdbd on port 6829 with
StorageLoc `slurm_bench_acct_db`, slurmctld on port 6827, its state, pid and log files under
cluster/state/scratch-accounting, and the nodes' slurmd ports moved by 100 so that this slurmctld
never talks to the local cluster's slurmd (its nodes stay "not responding", which no accounting
call cares about). Same binaries, same MariaDB, same munge and JWT key: the portal's operator
account reaches it exactly as it reaches the real one.

    scratch_accounting.select()   # before Django loads its settings
    scratch_accounting.start()    # before the first Slurm call
    ...
    scratch_accounting.stop()     # in a finally: daemons stopped, database dropped
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import wait_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cluster"))
import release  # noqa: E402 - cluster/'s scripts are not a package

CLUSTER_ETC = ROOT / "cluster/state/etc"
HOME = ROOT / "cluster/state/scratch-accounting"
CLUSTER = "benchacct"
DATABASE = "slurm_bench_acct_db"
DBD_PORT, CTLD_PORT = 6829, 6827
OPERATORS = ("portalop", "admin")  # as cluster/ctl registers them
SBIN = Path("/usr/sbin")


def select() -> None:
    """Point this process (and every Slurm client it starts) at the scratch daemons. Call it
    before Django loads its settings: the gateway takes SLURM_CLUSTER from the environment."""
    os.environ["SLURM_CONF"] = str(HOME / "etc/slurm.conf")
    os.environ["SLURM_CLUSTER"] = CLUSTER


def start() -> None:
    if not (CLUSTER_ETC / "slurmdbd.conf").exists():
        raise SystemExit("bench: no local cluster config; run `make cluster` (cluster/ctl up) first")
    select()
    stop()  # leftovers of a run that was killed
    for sub in ("etc", "log", "run", "spool", "spool/ctld"):
        (HOME / sub).mkdir(parents=True, exist_ok=True)
    slurm = pwd.getpwnam("slurm")
    for sub in ("log", "run", "spool", "spool/ctld"):
        os.chown(HOME / sub, slurm.pw_uid, slurm.pw_gid)
    _write_configs(slurm)
    _grant_database()
    _daemon(["slurmdbd"], "slurmdbd", lambda: _port_open(DBD_PORT))
    for args in (["add", "cluster", CLUSTER], ["add", "account", "ops", "description=portal operators"],
                 *(["add", "user", user, "account=ops", "adminlevel=Operator"] for user in OPERATORS)):
        _sacctmgr(*args)
    _daemon(["slurmctld", "-f", str(HOME / "etc/slurm.conf")], "slurmctld", _ctld_up)
    print(f"  scratch accounting: slurmdbd :{DBD_PORT} (database {DATABASE}), slurmctld :{CTLD_PORT}, "
          f"cluster {CLUSTER}", flush=True)


def stop() -> None:
    for name in ("slurmctld", "slurmdbd"):
        _kill(HOME / "run" / f"{name}.pid", name)
    release.mariadb_root(f"DROP DATABASE IF EXISTS {DATABASE}")
    shutil.rmtree(HOME, ignore_errors=True)


def _write_configs(slurm: pwd.struct_passwd) -> None:
    state = str(ROOT / "cluster/state")
    conf = (CLUSTER_ETC / "slurm.conf").read_text()
    conf = _set(conf, "ClusterName", CLUSTER)
    conf = _set(conf, "SlurmctldPort", str(CTLD_PORT))
    conf = _set(conf, "AccountingStoragePort", str(DBD_PORT))
    for key in ("StateSaveLocation", "SlurmctldPidFile", "SlurmctldLogFile"):
        conf = _set(conf, key, _relocated(conf, key, state))
    conf = re.sub(r"Port=\[(\d+)-(\d+)\]", lambda m: f"Port=[{int(m[1]) + 100}-{int(m[2]) + 100}]", conf)
    (HOME / "etc/slurm.conf").write_text(conf)
    dbd = (CLUSTER_ETC / "slurmdbd.conf").read_text()
    dbd = _set(dbd, "DbdPort", str(DBD_PORT))
    dbd = _set(dbd, "StorageLoc", DATABASE)
    for key in ("LogFile", "PidFile"):
        dbd = _set(dbd, key, _relocated(dbd, key, state))
    path = HOME / "etc/slurmdbd.conf"
    path.write_text(dbd)
    os.chmod(path, 0o600)  # it holds the database password
    os.chown(path, slurm.pw_uid, slurm.pw_gid)
    for name in ("gres.conf",):
        if (CLUSTER_ETC / name).exists():
            shutil.copy(CLUSTER_ETC / name, HOME / "etc" / name)


def _set(text: str, key: str, value: str) -> str:
    new, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"bench: the local cluster's config has {count} {key} lines, expected 1")
    return new


def _relocated(text: str, key: str, state: str) -> str:
    value = re.search(rf"^{key}=(.*)$", text, re.MULTILINE)[1]
    if not value.startswith(state + "/"):
        raise SystemExit(f"bench: {key}={value} is not under {state}")
    return str(HOME / value[len(state) + 1:])


def _grant_database() -> None:
    sql = "".join(f"GRANT ALL ON {DATABASE}.* TO 'slurm'@'{host}';" for host in ("localhost", "127.0.0.1"))
    proc = release.mariadb_root(sql)
    if proc.returncode != 0:
        raise RuntimeError(f"MariaDB refused the scratch database's grant: {proc.stderr.strip()}")


def _daemon(args: list[str], name: str, ready) -> None:
    proc = subprocess.run([str(SBIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {name} did not start: {proc.stderr.strip()} (log: {HOME / 'log'})")
    if wait_for(ready, 60) is None:
        raise SystemExit(f"bench: {name} not ready after 60 s (log: {HOME / 'log'})")


def _sacctmgr(*args: str) -> None:
    proc = subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "already exist" not in out and "Nothing new added" not in out:
        raise SystemExit(f"bench: sacctmgr {' '.join(args)}: {out.strip()}")


def _ctld_up() -> bool:
    proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10, check=False)
    return proc.returncode == 0 and "UP" in proc.stdout


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill(pid_file: Path, binary: str) -> None:
    """Only a live process of the expected binary named by our own pid file."""
    try:
        pid = int(pid_file.read_text().split()[0])
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return
    if not os.path.basename(exe).startswith(binary):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
