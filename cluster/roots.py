#!/usr/bin/env python3
"""Debian root file systems that carry a Slurm release the host does not package.

    python3 cluster/roots.py build trixie|sid|bookworm   debootstrap the root once (Slurm 24.11 / 26.05 / 22.05)
    python3 cluster/roots.py status [SUITE]      print each root, whether it is finished, its Slurm
    python3 cluster/roots.py path SUITE          print the root's directory

Roots live under $CLUSTER_ROOTS_DIR (default cluster/state/roots/<suite>/, git-ignored). A root is
finished when its marker file exists; a root without one is half-built (an interrupted
debootstrap) and is removed and rebuilt, because debootstrap cannot resume into a partial tree.
The mirror is the one apt already uses on this host, so a machine behind a local mirror needs no
extra configuration. Standard library only: cluster/ctl imports it before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ROOTS = HERE / "state" / "roots"
SUITES = {"trixie": "24.11", "sid": "26.05"}
# Not in the contract tests' loop (the host's own 22.05 is tested in full): built for
# `./cluster/ctl up --slurm 22.05` on a Debian 13 host, and for bench/'s 22.05 mini cluster
# (`rootcluster.py start bookworm`), which measures 22.05 and 24.11 on equal terms.
CLUSTER_ONLY_SUITES = {"bookworm": "22.05"}
PACKAGES = (
    "slurmctld",
    "slurmd",
    "slurmrestd",
    "slurm-client",
    "munge",
    "slurm-wlm-jwt-plugin",
    "slurmdbd",
)
MARKER = ".v11-root-finished"
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def roots_dir() -> Path:
    return Path(os.environ.get("CLUSTER_ROOTS_DIR", DEFAULT_ROOTS)).resolve()


def root_path(suite: str) -> Path:
    return roots_dir() / suite


def host_mirror() -> str:
    """The first Debian (not -security) URI apt uses, from deb822 or one-line sources."""
    sources = [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in sources:
        if not path.is_file():
            continue
        for uri in _uris(path.read_text(errors="replace"), deb822=path.suffix == ".sources"):
            if re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def _uris(text: str, *, deb822: bool) -> list[str]:
    if deb822:
        return [u for m in re.finditer(r"(?im)^URIs:\s*(.+)$", text) for u in m.group(1).split()]
    found = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if parts and parts[0] == "deb":
            found.extend(p for p in parts[1:] if "://" in p)
    return found


def is_finished(root: Path) -> bool:
    return (root / MARKER).is_file()


def slurm_version(root: Path) -> str:
    out = subprocess.run(
        ["chroot", str(root), "slurmctld", "-V"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def build(suite: str, *, root: Path | None = None, extra: tuple[str, ...] = ()) -> Path:
    """debootstrap `suite` into `root` (default: its place under the roots directory) once.
    `extra` packages go in too (the whole local cluster's root needs python3 for the hooks)."""
    if suite not in SUITES and suite not in CLUSTER_ONLY_SUITES:
        sys.exit(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    root = root or root_path(suite)
    if is_finished(root):
        print(f"{suite}: already built at {root}: {slurm_version(root)}")
        return root
    if shutil.which("debootstrap") is None:
        sys.exit("debootstrap is missing: apt-get install debootstrap (it is in make deps)")
    if root.exists():
        print(f"{suite}: removing a half-built root at {root}")
        _remove_root(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    mirror = host_mirror()
    expected = SUITES.get(suite) or CLUSTER_ONLY_SUITES[suite]
    print(f"{suite}: debootstrap from {mirror} into {root} (Slurm {expected} expected)")
    started = time.monotonic()
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join((*PACKAGES, *extra))}",
        suite,
        str(root),
        mirror,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout or ():
        if line.startswith(("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking")):
            continue  # one line per package: too chatty to be progress
        print(f"  {line.rstrip()}", flush=True)
    if proc.wait() != 0:
        sys.exit(f"{suite}: debootstrap failed (exit {proc.returncode}); the root stays unfinished")
    version = slurm_version(root)
    (root / MARKER).write_text(f"{version}\n")
    print(f"{suite}: built in {time.monotonic() - started:.0f} s: {version}")
    return root


def _remove_root(root: Path) -> None:
    # A root left behind by an interrupted run may still have the bind mounts of a mini cluster:
    # rmtree through a bound /dev or /proc would be a disaster, so refuse.
    with open("/proc/mounts") as fh:
        busy = [ln.split()[1] for ln in fh if ln.split()[1].startswith(str(root) + "/")]
    if busy:
        sys.exit(f"refusing to remove {root}: still mounted: {' '.join(busy)}")
    shutil.rmtree(root)


def status(suites: list[str]) -> None:
    for suite in suites or list(SUITES):
        if suite not in SUITES:
            sys.exit(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
        root = root_path(suite)
        if is_finished(root):
            print(f"{suite}: finished at {root}: {(root / MARKER).read_text().strip()}")
        elif root.exists():
            print(f"{suite}: half-built at {root} (the next build redoes it)")
        else:
            print(f"{suite}: not built ({root})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build").add_argument("suite", choices=sorted({**SUITES, **CLUSTER_ONLY_SUITES}))
    sub.add_parser("status").add_argument("suite", nargs="*", help=" | ".join(sorted(SUITES)))
    sub.add_parser("path").add_argument("suite", choices=sorted(SUITES))
    args = parser.parse_args(argv)
    if args.cmd == "build":
        build(args.suite)
    elif args.cmd == "status":
        status(args.suite)
    else:
        print(root_path(args.suite))


if __name__ == "__main__":
    main()
