#!/usr/bin/env python3
"""Which Slurm release the local cluster runs, and how a release the host does not package runs.

    python3 cluster/release.py others      the Debian suites the contract tests cover besides the host's
    python3 cluster/release.py other       a release to run the whole local cluster on besides the host's
    python3 cluster/release.py build 22.05 build that release's root now (nothing if the host packages it)

`./cluster/ctl up --slurm 24.11` runs the whole local cluster (slurmdbd, slurmctld, ten slurmd,
slurmrestd, the hooks) from a Debian root that carries that release (trixie: 24.11, sid: 26.05,
bookworm: 22.05 on a Debian 13 host). Each daemon runs with chroot into the root; the cluster's
state stays under cluster/state/ as usual, and so that every path in slurm.conf means the same in
and out of the root, the root sees these host directories at their own paths (bind mounts):
the checkout (hooks, config, spool, logs), /home (job output), /srv (checkpoints) and /tmp.
It reads the host's users: its /etc/passwd, group, shadow and gshadow are links to the host's files, so a
user added on the host can run jobs at once.

The roots live outside the checkout, under $CLUSTER_RELEASE_ROOTS (default /var/lib/portal-cluster):
deleting a checkout must never walk into a root's bind mounts of /home or /tmp.

Plain `sinfo`, `squeue`, `sbatch`, ... keep working for every user: while such a cluster runs,
/usr/local/bin holds small wrappers that run the root's own client in it (`unshare --user --root`,
which needs no privilege: the user keeps their own uid, and munge vouches for it as usual).
Slurm's clients must match the daemons' major version, so the host's own would be refused.
Standard library only: cluster/ctl imports this before any virtualenv exists.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roots  # a sibling script, not a package

VERSIONS = {"22.05": "bookworm", "24.11": "trixie", "26.05": "sid"}
RELEASE_ROOTS = Path(os.environ.get("CLUSTER_RELEASE_ROOTS", "/var/lib/portal-cluster")).resolve()
# The hooks (slurm_plugins/) are Python scripts that slurmd runs inside the root.
ROOT_EXTRA_PACKAGES = ("python3",)
SHARED_DIRS = ("/home", "/srv", "/tmp")  # noqa: S108 - bound into the root, not a temp file
# /dev with what is mounted under it (/dev/shm: Python's multiprocessing needs its semaphores
# there, and the seeded preprocessing template failed without it; /dev/pts for srun --pty).
# /sys with the cgroup file systems under it: slurmd 22.05 (from a bookworm root on a Debian 13
# host) refuses to start without /sys/fs/cgroup, whatever its plugins.
SYSTEM_MOUNTS = (("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]), ("dev", ["--rbind", "/dev"]))
HOST_ETC = "host/etc"  # where the root sees the host's /etc (read-only)
# 22.05 and 23.02: slurmrestd names a plugin per API version (openapi/v0.0.38), and slurmd with
# the local clusters' plugins needs no cgroup.conf (nor knows CgroupPlugin=disabled).
LEGACY_VERSIONS = ("22.05", "23.02")
# Client commands users and the portal call; each gets a wrapper while a root's cluster runs.
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "salloc", "scancel", "scontrol", "sacct", "sacctmgr",
           "sshare", "sprio", "sstat", "sreport", "sattach", "sbcast", "scrontab", "sdiag", "strigger")
WRAPPER_DIR = Path(os.environ.get("CLUSTER_WRAPPER_DIR", "/usr/local/bin"))
WRAPPER_MARK = "# cluster/ctl: a Slurm client from the local cluster's Debian root"
# sacctmgr's words for an add that finds its object there already (cluster/ctl and
# rootcluster.py register the same objects at every start), lower-cased: 22.05 says "already
# exists" or "Nothing new added", 24.11 "Already existing ..." or "Nothing added".
SACCTMGR_ALREADY_THERE = ("already exist", "nothing new added", "nothing added")
WRAPPER = """\
#!/bin/sh
{mark}
# The local cluster runs Slurm {version} from {root}; the host's own {name} is another major
# release, which slurmctld would refuse. This runs the root's {name} as you (your own uid and
# group, mapped into a user namespace that needs no privilege), from the same directory when the
# root sees it (/home, /srv, /tmp and the checkout), else from /.
wd=$PWD
[ -d "{root}$wd" ] || wd=/
exec unshare --user --map-user="$(id -u)" --map-group="$(id -g)" --root="{root}" --wd="$wd" /usr/bin/{name} "$@"
"""


@dataclass(frozen=True)
class Release:
    version: str              # "22.05"
    root: Path | None = None  # None: the host's own packages

    def cmd(self, args: list[str], user: str | None = None) -> list[str]:
        """A command line that runs `args` with this release's binaries (as `user` if given)."""
        if self.root is None:
            return ["/usr/sbin/runuser", "-u", user, "--", *args] if user else list(args)
        if user is None:
            return ["/usr/sbin/chroot", str(self.root), *args]
        entry = pwd.getpwnam(user)  # the root reads the host's passwd: the same ids
        return ["/usr/sbin/chroot", f"--userspec={entry.pw_uid}:{entry.pw_gid}", f"--groups={entry.pw_gid}",
                str(self.root), *args]

    @property
    def label(self) -> str:
        return f"Slurm {self.version}" + (f" from {self.root}" if self.root else " (host packages)")


def major(version_text: str) -> str:
    """"slurm-wlm 24.11.5" or "22.05.8-4+deb12u1" -> "24.11"."""
    found = re.search(r"(\d+)\.(\d+)", version_text)
    return f"{int(found.group(1)):02d}.{int(found.group(2)):02d}" if found else ""


def host_version() -> str:
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "slurmctld"], capture_output=True,
                          text=True, check=False)
    return major(proc.stdout) if proc.returncode == 0 else ""


def choose(requested: str | None) -> Release:
    """The release `up` should run: the one asked for, else the host's own."""
    host = host_version()
    wanted = requested or host
    if not wanted:
        raise SystemExit("cluster: error: Slurm is not installed on this host; run `make deps` first")
    if wanted == host:
        return Release(host)
    if wanted not in VERSIONS:
        known = sorted({*VERSIONS, host} - {""})
        raise SystemExit(f"cluster: error: --slurm {wanted}: choose one of {', '.join(known)} "
                         f"(the host packages {host or 'none'}; others run from a Debian root)")
    return Release(wanted, RELEASE_ROOTS / VERSIONS[wanted])


def saved(state: Path) -> Release:
    """The release `up` last started (the host's if none was recorded)."""
    path = state / "etc/release"
    text = path.read_text().split() if path.exists() else []
    if len(text) == 2:
        return Release(text[0], Path(text[1]))
    return Release(text[0] if text else host_version())


def save(state: Path, release: Release) -> None:
    (state / "etc/release").write_text(f"{release.version} {release.root or ''}".strip() + "\n")


def others() -> list[str]:
    """Suites whose mini cluster the contract tests (make test-versions) cover: not the host's."""
    host = host_version()
    return [suite for suite, version in roots.SUITES.items() if version != host]


# ---------------------------------------------------------------- a root for the whole cluster

def prepare_root(release: Release, checkout: Path, state: Path) -> None:
    """Build the root once, then (idempotently) give it the host's users, its bind mounts and
    slurm.conf at /etc/slurm, where the hooks' scontrol and users' jobs look for it."""
    root = release.root
    if root is None:
        raise ValueError("the host's own release has no root")
    roots.build(VERSIONS[release.version], root=root, extra=ROOT_EXTRA_PACKAGES)
    mount(root, checkout, state)
    link_host_users(root)
    etc = root / "etc/slurm"
    etc.mkdir(parents=True, exist_ok=True)
    for name in ("slurm.conf", "gres.conf", "cgroup.conf"):
        link = etc / name
        if not link.is_symlink() or os.readlink(link) != str(state / "etc" / name):
            link.unlink(missing_ok=True)
            link.symlink_to(state / "etc" / name)


def is_legacy(version: str) -> bool:
    """`version` ("22.05", or a full "22.05.8") is one of LEGACY_VERSIONS."""
    return ".".join(version.split(".")[:2]) in LEGACY_VERSIONS


def link_host_users(root: Path) -> None:
    """The root's passwd, group, shadow and hosts become the host's (through the read-only bind of
    /etc), and munge's files follow the host's munge ids, which may differ from the root's."""
    # shadow too: slurmd 26.05 runs `su - USER` for the user's environment (sbatch --export=
    # ALL,VAR=...), and PAM refuses a user the root's own shadow does not list. hosts: a bookworm
    # root has none, and its daemons then could not resolve "localhost" (seen on a Debian 13 host).
    for name in ("passwd", "group", "shadow", "gshadow", "hosts"):
        link = root / "etc" / name
        target = f"../{HOST_ETC}/{name}"  # relative: it resolves the same in and out of the root
        if not link.is_symlink() or os.readlink(link) != target:
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    munge = pwd.getpwnam("munge")
    for sub in ("etc/munge", "etc/munge/munge.key", "var/lib/munge", "var/log/munge", "run/munge"):
        path = root / sub
        if sub == "run/munge":
            path.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.chown(path, munge.pw_uid, munge.pw_gid)


def mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as fh:
        points = [line.split()[1] for line in fh]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


def mount(root: Path, checkout: Path, state: Path) -> None:
    mounted = set(mounts_under(root))
    wanted = [(root / name, ["mount", *args, str(root / name)]) for name, args in SYSTEM_MOUNTS]
    wanted.append((root / HOST_ETC, ["mount", "--bind", "/etc", str(root / HOST_ETC)]))
    for shared in _shared_dirs(checkout, state):
        inside = root / shared.lstrip("/")
        wanted.append((inside, ["mount", "--bind", shared, str(inside)]))
    for target, command in wanted:
        if str(target) in mounted:
            continue
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(command, check=True)
        if target == root / HOST_ETC:
            # The root reads the host's users; it may not change them.
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        # Whatever the root mounts must not spread back to the host.
        subprocess.run(["mount", "--make-rprivate", str(target)], check=True)
        mounted.add(str(target))


def _shared_dirs(checkout: Path, state: Path) -> list[str]:
    """/home, /srv, /tmp, and the checkout and state unless one of those already holds them."""
    dirs = list(SHARED_DIRS)
    for path in (checkout, state):
        if not any(path == Path(d) or Path(d) in path.parents for d in dirs):
            dirs.append(str(path))
    return dirs


def processes_in(root: Path) -> list[int]:
    """Pids whose root directory is `root`: the daemons, hooks and jobs of that cluster."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "root") == str(root):
                    found.append(int(proc.name))
    return found


def end_processes_in(root: Path, *, grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, whatever runs in the root (daemons, hooks, jobs' steps); the pids
    still there after both are returned."""
    pids = processes_in(root)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while (pids := processes_in(root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids:
            break
    return pids


def unmount(root: Path) -> list[str]:
    """Unmount everything under the root, deepest first; what could not be is returned."""
    for point in sorted(mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return mounts_under(root)


# ---------------------------------------------------------------- MariaDB (slurmdbd's database)

MARIADB_TCP = ("-h127.0.0.1", "-P3306")


def mariadb_root(sql: str, *, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`sql` as MariaDB's root. Over the server's socket first: a fresh Debian 12 or 13 install
    lets the OS's root in there (unix_socket) and refuses root over TCP. Then over TCP, for a
    server set up with a password-less root on 127.0.0.1 (as on the development machines)."""
    proc = None
    for where in ((), MARIADB_TCP):
        proc = subprocess.run(["mariadb", "-uroot", *where, *extra, "-e", sql], capture_output=True,
                              text=True, check=False)
        if proc.returncode == 0:
            break
    return proc


def mariadb_alive() -> bool:
    """The server answers (`ping` says so even to a client it would not let in)."""
    return any(subprocess.run(["mariadb-admin", *where, "ping"], capture_output=True, check=False).returncode == 0
               for where in ((), MARIADB_TCP))


def start_mariadb() -> None:
    """Start the machine's MariaDB the packaged way: Debian's init script hands over to systemd
    where it runs, and otherwise (a container, a chroot) runs mariadbd as the mysql user itself."""
    if mariadb_alive():
        return
    script = Path("/etc/init.d/mariadb")
    if script.exists():
        subprocess.run([str(script), "start"], check=False, capture_output=True)
    else:
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                        "/usr/sbin/mariadbd", "--", "--user=mysql"], check=False)


# ---------------------------------------------------------------- users' commands

def install_wrappers(release: Release) -> list[str]:
    """Wrappers for the root's clients in /usr/local/bin; never over a file we did not write."""
    if release.root is None:
        raise ValueError("the host's own release needs no wrappers")
    written = []
    for name in CLIENTS:
        if not (release.root / "usr/bin" / name).exists():
            continue
        path = WRAPPER_DIR / name
        if path.exists() and WRAPPER_MARK not in path.read_text(errors="replace"):
            continue  # a site's own tool of that name stays
        text = WRAPPER.format(mark=WRAPPER_MARK, version=release.version, root=release.root, name=name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o755)
        written.append(name)
    return written


def remove_wrappers() -> list[str]:
    removed = []
    for path in (WRAPPER_DIR / name for name in CLIENTS):
        with contextlib.suppress(OSError):
            if path.is_file() and WRAPPER_MARK in path.read_text(errors="replace"):
                path.unlink()
                removed.append(path.name)
    return removed


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if args == ["others"]:
        print(" ".join(others()))
    elif len(args) == 2 and args[0] == "build" and args[1] in VERSIONS:
        # Only the download: `ctl up --slurm` mounts and starts it (freshhost builds one online).
        release = choose(args[1])
        if release.root is not None:
            roots.build(VERSIONS[release.version], root=release.root, extra=ROOT_EXTRA_PACKAGES)
    elif args == ["other"]:
        host = host_version()
        print(next(v for v in ("24.11", "26.05") if v != host))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
