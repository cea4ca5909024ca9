#!/usr/bin/env python3
"""A two-node Slurm cluster run from a Debian root (cluster/roots.py), on ports of its own.

    python3 cluster/rootcluster.py start  [SUITE]   munged, slurmdbd, slurmctld, 2 slurmd, slurmrestd
    python3 cluster/rootcluster.py stop   [SUITE]   every process running in the root, then its mounts
    python3 cluster/rootcluster.py status [SUITE]   daemons, mounts, sinfo from the root
    python3 cluster/rootcluster.py env    [SUITE]   shell lines for the contract tests
    python3 cluster/rootcluster.py reset  [SUITE]   stop, then drop its accounting database and
                                                    slurmctld's state: the next start is a new cluster

It proves the gateway against a Slurm release the host does not package (trixie: 24.11, sid:
26.05), next to the host's own cluster and without touching it; bookworm (22.05) runs too, so a
bench can set 22.05 against 24.11 on equal terms: ports 7817 (slurmctld), 7818-7819 (slurmd), 7820 (slurmrestd),
7821 (slurmdbd), ClusterName v11test. slurmdbd keeps its tables in the host's MariaDB, in a
database of its own per suite (slurm_v11_<suite>, user slurmv11). Everything else (config, spool,
logs, pid files, munge socket, the JWT key) lives inside the root, under the paths Debian's
packages use, so the root's own `scontrol`, `squeue` and `sbatch` work with `chroot ROOT ...`
and no SLURM_CONF. The host's 22.05 clients cannot talk to a 24.11 slurmctld.

`stop` ends exactly the processes whose root directory is this root (the daemons and the jobs
they started), so it can never touch the host's cluster; then it unmounts /proc, /sys and /dev
from the root. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import release  # sibling scripts, not a package
import roots

CLUSTER_NAME = os.environ.get("ROOTCLUSTER_NAME", "v11test")
PORTS = {"slurmctld": 7817, "gpu01": 7818, "gpu02": 7819, "slurmrestd": 7820, "slurmdbd": 7821}
NODES = ("gpu01", "gpu02")
COPIED_USERS = ("alice", "bob", "carol", "portalop")  # job owners, and the gateway's operator account
# Accounts and users slurmdbd starts with, as cluster/ctl gives the host's cluster.
ACCOUNTS = {"vision": ("alice", "bob"), "nlp": ("carol",)}
DB_USER = "slurmv11"
REST_USER = "nobody"  # slurmrestd refuses root and SlurmUser
# The whole-cluster roots' mounts: /sys with its cgroups (22.05's slurmd fails without them),
# /dev with /dev/shm and /dev/pts.
MOUNTS = release.SYSTEM_MOUNTS
GPU_DIR = "/var/lib/slurm-fake-gpu"  # char devices (c 1 3) standing in for /dev/nvidia*

SLURM_CONF = """\
# Written by cluster/rootcluster.py: a Slurm {version} mini cluster for the gateway's contract tests.
ClusterName={cluster}
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
SlurmctldPort={ctld_port}
SlurmdPort={first_slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/etc/slurm/jwt.key
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu,gres/gpu:h100
PriorityType=priority/multifactor
PriorityWeightFairshare=10000
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
MinJobAge=300
KillWait=5
DefMemPerCPU=1024
NodeName=gpu[01-02] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[{first_slurmd_port}-{last_slurmd_port}] \\
  CPUs=8 RealMemory=16384 Gres=gpu:h100:4 State=UNKNOWN
PartitionName=debug Nodes=gpu[01-02] MaxTime=01:00:00 State=UP
PartitionName=gpu Nodes=gpu[01-02] Default=YES MaxTime=2-00:00:00 State=UP
"""
SLURMDBD_CONF = """\
# Written by cluster/rootcluster.py. Mode 600, owned by SlurmUser: it holds the database password.
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/etc/slurm/jwt.key
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser={db_user}
StoragePass={db_password}
StorageLoc={db_name}
"""
GRES_CONF = f"NodeName=gpu[01-02] Name=gpu Type=h100 File={GPU_DIR}/nvidia[0-3]\n"
CGROUP_CONF = "# No cgroup file system inside the root.\nCgroupPlugin=disabled\n"


def log(message: str) -> None:
    print(f"rootcluster: {message}", flush=True)


def die(message: str) -> None:
    sys.exit(f"rootcluster: {message}")


def root_of(suite: str) -> Path:
    root = roots.root_path(suite)
    if not roots.is_finished(root):
        die(f"no finished {suite} root at {root}: run `python3 cluster/roots.py build {suite}`")
    return root


def chroot(root: Path, args: list[str], *, user: str | None = None, env: dict | None = None,
           check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(_chroot_cmd(root, args, user), env=_env(env), capture_output=True, text=True,
                          check=check, timeout=timeout, stdin=subprocess.DEVNULL)


def _chroot_cmd(root: Path, args: list[str], user: str | None) -> list[str]:
    if user is None:
        return ["chroot", str(root), *args]
    uid, gid = _ids(root, user)
    # Numeric ids: chroot resolves names before entering the root, against the host's files.
    return ["chroot", f"--userspec={uid}:{gid}", f"--groups={gid}", str(root), *args]


def _env(extra: dict | None) -> dict:
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            **(extra or {})}


def _ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return int(parts[2]), int(parts[3])
    die(f"no user {user!r} in {root}/etc/passwd")
    raise AssertionError


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what: str, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    die(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------- processes and mounts

# Which processes run in a root and what is mounted under it: shared with the whole-cluster
# roots of cluster/release.py.
processes_in = release.processes_in
end_processes_in = release.end_processes_in
mounts_under = release.mounts_under


def mount_all(root: Path) -> None:
    mounted = set(mounts_under(root))
    for name, args in MOUNTS:
        target = root / name
        if str(target) not in mounted:
            subprocess.run(["mount", *args, str(target)], check=True)
            # Keep whatever the root mounts from spreading back to the host's /dev.
            subprocess.run(["mount", "--make-rprivate", str(target)], check=True)


def unmount_all(root: Path) -> None:
    for point in sorted(mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False)


# ---------------------------------------------------------------- configuration

def prepare(root: Path) -> None:
    """Users, directories, keys, fake GPUs and config inside the root (idempotent)."""
    os.umask(0o022)
    copy_users(root)
    slurm = _ids(root, "slurm")
    munge = _ids(root, "munge")
    for path, owner in (("run/munge", munge), ("run/slurm", slurm), ("var/spool/slurmctld", slurm),
                        ("var/spool/slurmd", (0, 0)), ("var/log/slurm", slurm), ("etc/slurm", (0, 0))):
        (root / path).mkdir(parents=True, exist_ok=True)
        os.chown(root / path, *owner)
    for user in ("alice", "bob"):
        home = root / "home" / user
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, *_ids(root, user))
    key = root / "etc/slurm/jwt.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(32))
    os.chown(key, *slurm)
    key.chmod(0o600)
    if not (root / "etc/munge/munge.key").exists():
        chroot(root, ["mungekey", "--create"])
    for path in (root / "etc/munge", root / "etc/munge/munge.key"):
        os.chown(path, *munge)
    hosts = root / "etc/hosts"
    if not hosts.exists():  # debootstrap's minbase writes none; slurmdbd's clients look up "localhost"
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    make_gpus(root)
    write_config(root)


def copy_users(root: Path) -> None:
    """The host's entries for job owners, so uids agree in and out of the root."""
    for table, names in (("passwd", COPIED_USERS), ("group", COPIED_USERS)):
        inside = (root / "etc" / table).read_text()
        have = {line.split(":")[0] for line in inside.splitlines()}
        with open(f"/etc/{table}") as fh:
            wanted = [line for line in fh if line.split(":")[0] in names and line.split(":")[0] not in have]
        if wanted:
            with open(root / "etc" / table, "a") as out:
                out.writelines(wanted)


def make_gpus(root: Path) -> None:
    gpu_dir = root / GPU_DIR.lstrip("/")
    gpu_dir.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        if not (gpu_dir / f"nvidia{i}").exists():
            os.mknod(gpu_dir / f"nvidia{i}", 0o666 | 0o020000, os.makedev(1, 3))


def write_config(root: Path) -> None:
    version = roots.slurm_version(root).split()[-1]
    etc = root / "etc/slurm"
    (etc / "slurm.conf").write_text(SLURM_CONF.format(
        version=version, cluster=CLUSTER_NAME, ctld_port=PORTS["slurmctld"], dbd_port=PORTS["slurmdbd"],
        first_slurmd_port=PORTS[NODES[0]], last_slurmd_port=PORTS[NODES[-1]]))
    dbd = etc / "slurmdbd.conf"
    dbd.write_text(SLURMDBD_CONF.format(dbd_port=PORTS["slurmdbd"], db_user=DB_USER,
                                        db_password=db_password(root), db_name=db_name(root)))
    dbd.chmod(0o600)
    os.chown(dbd, *_ids(root, "slurm"))
    (etc / "gres.conf").write_text(GRES_CONF)
    # 22.05 knows no CgroupPlugin=disabled and, with task/none and linuxproc, needs no cgroup.conf.
    if legacy(root):
        (etc / "cgroup.conf").unlink(missing_ok=True)
    else:
        (etc / "cgroup.conf").write_text(CGROUP_CONF)


def legacy(root: Path) -> bool:
    """Slurm 22.05 or 23.02 in the root: slurmrestd names each API version's plugin."""
    return release.is_legacy(roots.slurm_version(root).split()[-1])


def db_name(root: Path) -> str:
    return f"slurm_v11_{root.name}" if root.name.isidentifier() else "slurm_v11"


def db_password(root: Path) -> str:
    """Made once per root, kept in it (mode 600): slurmdbd's MariaDB password."""
    path = root / "etc/slurm/db.password"
    if not path.exists():
        path.write_text(secrets.token_hex(16) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_database(root: Path) -> None:
    """slurmdbd's database and user in the host's MariaDB (the root reaches it on 127.0.0.1)."""
    password, name = db_password(root), db_name(root)  # hex and an identifier: safe in SQL
    sql = f"CREATE DATABASE IF NOT EXISTS {name};" + "".join(
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{password}';"
        f"ALTER USER '{DB_USER}'@'{host}' IDENTIFIED BY '{password}';"
        f"GRANT ALL ON {name}.* TO '{DB_USER}'@'{host}';" for host in ("localhost", "127.0.0.1"))
    proc = release.mariadb_root(sql)
    if proc.returncode != 0:
        die(f"MariaDB refused slurmdbd's database: {proc.stderr.strip()} "
            "(cluster/ctl up starts MariaDB)")


def register_accounting(root: Path) -> None:
    """The cluster, its accounts and users, and the portal's operator, as cluster/ctl does."""
    wanted = [["add", "cluster", CLUSTER_NAME], ["add", "account", "ops", "description=portal operators"],
              ["add", "user", "portalop", "account=ops", "adminlevel=Operator"]]
    for account, users in ACCOUNTS.items():
        wanted.append(["add", "account", account, f"description={account}"])
        wanted.append(["add", "user", ",".join(users), f"account={account}"])
    for args in wanted:
        out = chroot(root, ["sacctmgr", "-i", *args], check=False)
        said = (out.stdout + out.stderr).lower()
        # A second start finds them there already.
        if out.returncode != 0 and not any(m in said for m in release.SACCTMGR_ALREADY_THERE):
            die(f"sacctmgr {' '.join(args)}: {(out.stdout + out.stderr).strip()}")


# ---------------------------------------------------------------- start / stop / status

def munge_ok(root: Path) -> bool:
    return chroot(root, ["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0


def ctld_up(root: Path) -> bool:
    out = chroot(root, ["scontrol", "ping"], check=False, timeout=15)
    return out.returncode == 0 and "UP" in out.stdout


def nodes_up(root: Path) -> bool:
    """Both slurmd registered: any state but down/unknown/not responding (a "*" suffix). Jobs
    that the last stop ended may keep a node mixed or completing for a while; that is fine."""
    out = chroot(root, ["sinfo", "-h", "-N", "-o", "%N %t"], check=False)
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    return all(node in states and not states[node].endswith(("*", "~", "#")) and
               states[node] not in {"down", "unk", "inval", "fail", "boot"} for node in NODES)


def cmd_start(suite: str) -> None:
    if os.geteuid() != 0:
        die("run as root: chroot, mounts, and slurmd starting jobs as their users")
    started = time.monotonic()
    root = root_of(suite)
    if processes_in(root):
        log(f"already running in {root} (stop first to restart)")
        return
    busy = [f"{name}:{port}" for name, port in PORTS.items() if port_open(port)]
    if busy:
        die(f"ports in use by something else: {', '.join(busy)}")
    try:
        launch(root)
    except (SystemExit, subprocess.SubprocessError, OSError) as exc:
        log(f"start failed ({exc}); see {root}/var/log/slurm/; cleaning up")
        cmd_stop(suite)
        raise
    log(f"{roots.slurm_version(root)} up in {time.monotonic() - started:.1f} s "
        f"(slurmrestd http://127.0.0.1:{PORTS['slurmrestd']}, JWT key {root}/etc/slurm/jwt.key)")


def launch(root: Path) -> None:
    prepare(root)
    mount_all(root)
    chroot(root, ["/usr/sbin/munged", "--force"], user="munge")
    wait_for("munged", lambda: munge_ok(root), 15)
    ensure_database(root)
    chroot(root, ["/usr/sbin/slurmdbd"])
    wait_for(f"slurmdbd on {PORTS['slurmdbd']}", lambda: port_open(PORTS["slurmdbd"]), 60)
    register_accounting(root)
    chroot(root, ["/usr/sbin/slurmctld"])
    wait_for("slurmctld", lambda: ctld_up(root), 60)
    for node in NODES:
        chroot(root, ["/usr/sbin/slurmd", "-N", node])
    start_restd(root)
    wait_for(f"slurmrestd on {PORTS['slurmrestd']}", lambda: port_open(PORTS["slurmrestd"]), 30)
    wait_for("both nodes to register", lambda: nodes_up(root), 90)


def start_restd(root: Path) -> None:
    # slurmrestd has no daemon mode: detach it here and record its pid where stop() finds it.
    plugins = "openapi/v0.0.38,openapi/dbv0.0.38" if legacy(root) else "openapi/slurmctld"
    args = ["/usr/sbin/slurmrestd", "-a", "rest_auth/jwt", "-s", plugins, f"127.0.0.1:{PORTS['slurmrestd']}"]
    with open(root / "var/log/slurm/slurmrestd.log", "ab") as logfile:
        proc = subprocess.Popen(_chroot_cmd(root, args, REST_USER), env=_env({"SLURM_JWT": "daemon"}),
                                stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (root / "run/slurm/slurmrestd.pid").write_text(f"{proc.pid}\n")


def cmd_stop(suite: str) -> None:
    root = roots.root_path(suite)
    pids = end_processes_in(root, grace=15.0)
    if pids:
        die(f"processes still running in {root}: {pids}")
    unmount_all(root)
    left = mounts_under(root)
    if left:
        die(f"still mounted: {' '.join(left)}")
    log(f"stopped: no process and no mount left in {root}")


def cmd_status(suite: str) -> None:
    root = roots.root_path(suite)
    pids = processes_in(root)
    names = []
    for pid in pids:
        with contextlib.suppress(OSError):
            names.append(f"{Path(f'/proc/{pid}/comm').read_text().strip()}({pid})")
    print(f"root:      {root}")
    print(f"processes: {' '.join(names) or 'none'}")
    print(f"mounts:    {' '.join(mounts_under(root)) or 'none'}")
    print("ports:     " + " ".join(f"{n}:{p}={'open' if port_open(p) else 'closed'}" for n, p in PORTS.items()))
    if pids:
        print(chroot(root, ["sinfo"], check=False).stdout, end="")


def cmd_env(suite: str) -> None:
    root = roots.root_path(suite)
    print(f"export SLURM_V11_REST_URL=http://127.0.0.1:{PORTS['slurmrestd']}")
    print(f"export SLURM_V11_ROOT={root}")
    print(f"export SLURM_V11_JWT_KEY={root}/etc/slurm/jwt.key")
    print(f"export SLURM_V11_CLUSTER={CLUSTER_NAME}")


def cmd_reset(suite: str) -> None:
    """A new cluster on the next start: benches that write thousands of accounting objects drop
    them this way (one DROP DATABASE). slurmctld's state goes too: it holds the old database's
    ClusterID, and slurmctld refuses to start against a database that gave it another one."""
    root = roots.root_path(suite)
    cmd_stop(suite)
    proc = release.mariadb_root(f"DROP DATABASE IF EXISTS {db_name(root)}")
    if proc.returncode != 0:
        die(f"MariaDB refused to drop {db_name(root)}: {proc.stderr.strip()}")
    shutil.rmtree(root / "var/spool/slurmctld", ignore_errors=True)
    log(f"reset: database {db_name(root)} dropped, slurmctld's state removed; the next start makes them anew")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "status", "env", "reset"))
    parser.add_argument("suite", nargs="?", default="trixie")
    args = parser.parse_args(argv)
    known = {**roots.SUITES, **roots.CLUSTER_ONLY_SUITES}
    if args.suite not in known:
        die(f"unknown suite {args.suite!r}: choose one of {', '.join(known)}")
    commands = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "env": cmd_env, "reset": cmd_reset}
    commands[args.command](args.suite)


if __name__ == "__main__":
    main()
