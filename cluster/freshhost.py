#!/usr/bin/env python3
"""Run the project's own two commands on a fresh Debian host of another release, on this machine.

    python3 cluster/freshhost.py run trixie [TARGET ...]   default target: test (`make test`)
    python3 cluster/freshhost.py run --release 22.05 trixie test-release SLURM=22.05
                                                          the cluster there on 22.05 from a bookworm root
    python3 cluster/freshhost.py shell trixie [COMMAND]   a shell (or one command) on that host, offline
    python3 cluster/freshhost.py remove trixie

The project must work whichever Debian it lands on: on Debian 13 (trixie) the host's own Slurm is
24.11, Python is 3.13, PostgreSQL 17, and MariaDB, Redis and Chromium differ too. Only a real
Debian 13 host proves `make test` there, so this makes one: a debootstrap root of the suite (the
default variant, as a server install has: procps, iproute2, ...) plus make, git and python3, and
nothing the Makefile installs itself. Into it goes a fresh clone of this checkout's HEAD, at
/srv/portal, as CI clones main.

Then, in two steps:
1. Online, on the machine's network: `make deps venv assets` only, the targets that download
   (Debian packages, PyPI, npm). No server is started: policy-rc.d refuses every start.
2. Offline: `make TARGET` with CI=true, in namespaces of its own: its own network (loopback
   only, so its PostgreSQL, Redis, MariaDB and cluster use their usual ports beside this
   machine's, and nothing leaves the machine), its own process table and mounts. Everything it
   started ends with it.

The machine's CA certificates and apt/pip settings are copied in first, as a site's image of the
machine would have them. Standard library only. Roots live under $CLUSTER_RELEASE_ROOTS
(default /var/lib/portal-cluster) as host-<suite>.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import roots  # noqa: E402 - a sibling script, not a package

SUITES = ("bookworm", "trixie")
BASE_PACKAGES = ("make", "git", "python3", "ca-certificates")
CHECKOUT = "/srv/portal"  # inside the root; readable by every user, unlike /root
MARKER = ".freshhost-finished"
OLD_ROOT = ".machine"  # where the machine's file system is, for a moment, while the root takes over
# The machine's settings a site image would carry: package mirrors' trust, pip's indexes and CA.
COPIED = ("/etc/hosts", "/etc/resolv.conf", "/etc/pip.conf")
COPIED_DIRS = ("/usr/local/share/ca-certificates",)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a login on the machine passes on about certificates and pip (see `env` on this machine).
PASSED_ENV = ("PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK",
              "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


def log(msg: str) -> None:
    print(f"freshhost: {msg}", flush=True)


def root_of(suite: str) -> Path:
    base = Path(os.environ.get("CLUSTER_RELEASE_ROOTS", "/var/lib/portal-cluster")).resolve()
    return base / f"host-{suite}"


def build(suite: str) -> Path:
    root = root_of(suite)
    if (root / MARKER).is_file():
        return root
    if root.exists():
        log(f"removing a half-built root at {root}")
        remove(suite)
    root.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"debootstrap {suite} into {root}")
    subprocess.run(["debootstrap", f"--include={','.join(BASE_PACKAGES)}", suite, str(root),
                    roots.host_mirror()], check=True, stdout=subprocess.DEVNULL)
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\n# freshhost: no service starts on install\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    (root / MARKER).write_text(f"{suite}\n")
    log(f"built in {time.monotonic() - started:.0f} s")
    return root


def copy_settings(root: Path) -> None:
    for name in COPIED:
        if Path(name).is_file():
            shutil.copyfile(name, root / name.lstrip("/"))
    for name in COPIED_DIRS:
        if Path(name).is_dir():
            shutil.copytree(name, root / name.lstrip("/"), dirs_exist_ok=True)
    subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, stdout=subprocess.DEVNULL)


def clone(root: Path) -> None:
    dest = root / CHECKOUT.lstrip("/")
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(HERE.parent), str(dest)], check=True)
    head = subprocess.run(["git", "-C", str(dest), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True, check=True).stdout.strip()
    log(f"cloned HEAD into {dest}: {head[:100]}")


def in_root(root: Path, command: str, *, offline: bool) -> int:
    """`command` in the root with a fresh /proc and /tmp and the machine's /sys (with its cgroups,
    as a host has them) and /dev, in a mount namespace of its own (so nothing stays mounted);
    offline adds a network and a process table of its own."""
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in PASSED_ENV if k in os.environ)
    inner = (f"cd {CHECKOUT} && exec env -i HOME=/root PATH={PATH} LANG=C.UTF-8 TERM=dumb CI=true "
             f"DEBIAN_FRONTEND=noninteractive {env} bash -c {shlex.quote(command)}")
    r = shlex.quote(str(root))
    # pivot_root, not chroot: a chrooted process may not make user namespaces, and the users'
    # wrappers of a cluster from a release root (`ctl up --slurm 22.05` there) need them.
    setup = (f"mount --make-rprivate / && mount --bind {r} {r} && mount -t proc proc {r}/proc"
             f" && mount --rbind /sys {r}/sys && mount --rbind /dev {r}/dev"
             f" && mount -t tmpfs -o mode=1777 tmpfs {r}/tmp"  # noqa: S108 - the root's /tmp
             f" && mkdir -p {r}/{OLD_ROOT} && cd {r} && pivot_root . {OLD_ROOT} && umount -l /{OLD_ROOT}")
    if offline:
        # A host has an IPv4 address besides 127.0.0.1, and Slurm 24.11 needs one: its daemons
        # look up their listening address with AI_ADDRCONFIG for IPv4 only, which glibc refuses
        # ("Name or service not known") when 127.0.0.1 is the only one. 127.0.0.2 stays on loopback.
        setup = f"ip link set lo up && ip addr add 127.0.0.2/32 dev lo && {setup}"
    script = f"{setup} && exec /bin/bash -c {shlex.quote(inner)}"
    flags = ["--mount", "--fork"] + (["--net", "--pid", "--ipc", "--uts"] if offline else [])
    return subprocess.run(["unshare", *flags, "/bin/bash", "-c", script], check=False).returncode


def run(suite: str, targets: list[str], releases: list[str]) -> int:
    started = time.monotonic()
    root = build(suite)
    copy_settings(root)
    clone(root)
    online = "make deps venv assets" + "".join(f" && python3 cluster/release.py build {shlex.quote(v)}"
                                               for v in releases)
    log(f"online: {online}")
    rc = in_root(root, online, offline=False)
    if rc != 0:
        log(f"the online step failed (exit {rc})")
        return rc
    log(f"offline: make {' '.join(targets)} (own network, loopback only)")
    rc = in_root(root, f"make {' '.join(shlex.quote(t) for t in targets)}", offline=True)
    log(f"make {' '.join(targets)} on a fresh {suite} host: exit {rc}, "
        f"{(time.monotonic() - started) / 60:.1f} min in all")
    return rc


def remove(suite: str) -> None:
    root = root_of(suite)
    with open("/proc/mounts") as fh:
        busy = [ln.split()[1] for ln in fh if ln.split()[1].startswith(str(root) + "/")]
    if busy:
        sys.exit(f"refusing to remove {root}: still mounted: {' '.join(busy)}")
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run")
    run_p.add_argument("suite", choices=SUITES)
    run_p.add_argument("targets", nargs="*", default=["test"])
    run_p.add_argument("--release", action="append", default=[], metavar="VERSION",
                       help="also build this Slurm release's root online (for `make ... SLURM=VERSION` there)")
    shell_p = sub.add_parser("shell")
    shell_p.add_argument("suite", choices=SUITES)
    shell_p.add_argument("command", nargs="?", default="exec bash -i")
    sub.add_parser("remove").add_argument("suite", choices=SUITES)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root: debootstrap, chroot and namespaces need it")
    if args.cmd == "run":
        sys.exit(run(args.suite, args.targets, args.release))
    if args.cmd == "shell":
        sys.exit(in_root(build(args.suite), args.command, offline=True))
    remove(args.suite)


if __name__ == "__main__":
    main()
