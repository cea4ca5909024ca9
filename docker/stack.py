#!/usr/bin/env python3
"""Build, start and stop the Compose stack (docker/compose.yaml) on this machine.

    python3 docker/stack.py up          engine, base image, wheels, images, secrets; start; wait for
                                        every health check; print the time it took
    python3 docker/stack.py down [-v]   stop and remove the containers (-v: and every volume)
    python3 docker/stack.py build       the three images (prints their sizes)
    python3 docker/stack.py status      each service's state and health
    python3 docker/stack.py compose ARGS...   docker compose (or docker-compose) on the stack

Everything it downloads comes from Debian's packages and PyPI: the base image is made with
debootstrap when no registry serves it (docker/base-image.sh), and the Python packages are made
into wheels by a throw-away container of the image's Python, the host's CA bundle mounted at run
time, then installed offline in the image, so no certificate ever enters an image layer. Caches
live under var/docker/ (git-ignored).

Settings (environment): STACK_BASE_IMAGE (default debian:bookworm-slim), STACK_SECRETS (default
docker/secrets), STACK_PROJECT (default portalstack). Standard library only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from slurm_plugins import report  # the one node-key derivation the portal checks with

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = REPO / "var" / "docker"
PROJECT = os.environ.get("STACK_PROJECT", "portalstack")
BASE_IMAGE = os.environ.get("STACK_BASE_IMAGE", "debian:bookworm-slim")
SECRETS_DIR = Path(os.environ.get("STACK_SECRETS", HERE / "secrets")).resolve()
PREFIX = os.environ.get("STACK_IMAGE_PREFIX", "cluster-portal")
NODES = ("dgpu01", "dgpu02")
# Every port the stack listens on (127.0.0.1, host networking): see compose.yaml.
PORTS = (15432, 16379, 13306, 16817, 16819, 16820, 16831, 16832, 18000, 18080)
# image name -> (Dockerfile, target)
IMAGES = {"web": ("Dockerfile", "portal"), "slurm": ("Dockerfile.cluster", "slurm"),
          "services": ("Dockerfile.cluster", "services")}
# The code the images need; tests, benches and the dev cluster stay out.
APP_PATHS = ("manage.py", "portal", "workers", "templates", "slurm_plugins", "examples")
VENDOR = ("node_modules/htmx.org/dist", "node_modules/chart.js/dist")
# Test and lint tools in requirements.txt that the running portal does not import.
DEV_ONLY = {"pytest", "pytest-django", "ruff", "schemathesis", "playwright"}
APT_PACKAGES = ("docker.io", "docker-compose", "debootstrap")
# Secrets the stack mounts that are text (hex); the keys are bytes.
TEXT_SECRETS = ("portal_secret_key", "db_password", "pg_superuser_password", "redis_password",
                "slurmdbd_db_password", "health_master_key")
DOCKERD_ARGS = ("--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false")


def log(msg: str) -> None:
    print(f"stack: {msg}", flush=True)


def die(msg: str) -> None:
    sys.exit(f"stack: {msg}")


def docker_bin() -> str:
    # Debian's CLI matches Debian's daemon; another CLI on PATH may need BuildKit's buildx.
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def docker(*args: str, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    return subprocess.run([docker_bin(), *args], check=check, text=True, env=env,
                          capture_output=capture, **kw)


@functools.cache  # asked once per process: every compose() call would otherwise run `docker compose version`
def compose_cmd() -> tuple[str, ...]:
    """Compose v2 where the docker CLI has it, else Debian 12's docker-compose 1.29."""
    if docker("compose", "version", check=False, capture=True).returncode == 0:
        return (docker_bin(), "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    die("neither `docker compose` nor docker-compose is installed (stack.py engine installs it)")
    return ()


def compose(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "STACK_SECRETS": str(SECRETS_DIR), "DOCKER_BUILDKIT": "0",
           "STACK_IMAGE_PREFIX": PREFIX}
    cmd = [*compose_cmd(), "-p", PROJECT, "-f", str(HERE / "compose.yaml"), *args]
    return subprocess.run(cmd, check=check, text=True, env=env, capture_output=capture)


# ---------------------------------------------------------------- the engine

def engine() -> None:
    """Debian's docker.io and a running dockerd without a bridge (nothing in private ranges)."""
    missing = [p for p in APT_PACKAGES if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False,
    ).stdout != "install ok installed"]
    if missing:
        log(f"apt: installing {' '.join(missing)}")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if docker("info", check=False, capture=True).returncode == 0:
        check_no_bridge()
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"starting dockerd {' '.join(DOCKERD_ARGS)} (log: {CACHE / 'dockerd.log'})")
    with open(CACHE / "dockerd.log", "ab") as out:
        subprocess.Popen(["dockerd", *DOCKERD_ARGS], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while docker("info", check=False, capture=True).returncode != 0:
        if time.monotonic() > deadline:
            die(f"dockerd did not start in 60 s; see {CACHE / 'dockerd.log'}")
        time.sleep(0.5)
    check_no_bridge()


def check_no_bridge() -> None:
    """A dockerd with its default bridge would hand containers 172.17.x addresses."""
    out = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}", capture=True).stdout
    if any(line.split()[1:] == ["bridge"] for line in out.splitlines()):
        die("this dockerd has a bridge network (a private address range); the stack needs one started "
            f"with {' '.join(DOCKERD_ARGS)}: stop it, then run `stack.py up` again")


# ---------------------------------------------------------------- images

def runtime_requirements() -> str:
    lines = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name = line.split("==")[0].split("[")[0].strip().lower()
        if line.strip() and not line.startswith("#") and name not in DEV_ONLY:
            lines.append(line.strip())
    return "\n".join(lines) + "\n"


def wheels() -> Path:
    """Wheels made by the image's own Python (the Dockerfile's `python` stage): pip judges
    environment markers by the interpreter it runs on, so wheels resolved on the host could miss
    a dependency the image needs. That container alone reaches PyPI, trusting the host's CA bundle
    mounted read-only at run time; no layer ever holds it. Cached per requirements and base."""
    reqs = runtime_requirements()
    py_tag = f"{PREFIX}-python:latest"
    docker("build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--target", "python",
           "-f", str(HERE / "Dockerfile"), "-t", py_tag, str(empty_dir()), stdout=subprocess.DEVNULL)
    image_id = docker("image", "inspect", "-f", "{{.Id}}", py_tag, capture=True).stdout.strip()
    out = CACHE / f"wheels-{hashlib.sha256(f'{reqs}{image_id}'.encode()).hexdigest()[:12]}"
    if (out / "requirements.txt").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "req.in").write_text(reqs)
    log(f"wheels for {BASE_IMAGE}'s Python into {out.relative_to(REPO)}")
    docker("run", "--rm", "--network", "host", "-v", f"{out}:/wheels", "-v", f"{host_ca()}:/run/host-ca.pem:ro",
           "-e", "PIP_CERT=/run/host-ca.pem", "-e", "PIP_DISABLE_PIP_VERSION_CHECK=1", py_tag, "sh", "-c",
           "python3 -m venv /tmp/v && /tmp/v/bin/pip wheel -q -w /wheels -r /wheels/req.in")
    (out / "req.in").rename(out / "requirements.txt")
    return out


def empty_dir() -> Path:
    path = CACHE / "empty"
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_ca() -> str:
    for path in (os.environ.get("PIP_CERT", ""), "/etc/ssl/certs/ca-certificates.crt"):
        if path and Path(path).is_file():
            return path
    die("no CA bundle on this host for pip (set PIP_CERT)")
    return ""


def context() -> Path:
    """The build context: tracked code, front-end libraries, the entrypoint and the wheels, and
    nothing else (no .venv, var/ or key reaches the builder, whichever builder it is)."""
    ctx = CACHE / "context"
    shutil.rmtree(ctx, ignore_errors=True)
    (ctx / "app").mkdir(parents=True)
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--", *APP_PATHS],
                             capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, tracked):
        src = REPO / rel
        if src.is_file():
            (ctx / "app" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / "app" / rel)
    for rel in VENDOR:
        if not (REPO / rel).is_dir():
            die(f"{rel} is missing: run `make assets` first")
        shutil.copytree(REPO / rel, ctx / "app" / rel)
    (ctx / "docker").mkdir()
    for name in ("entrypoint.sh", "nginx.conf", "alive.py"):
        shutil.copy2(HERE / name, ctx / "docker" / name)
    shutil.copytree(wheels(), ctx / "wheels")
    return ctx


def build() -> dict[str, int]:
    engine()
    subprocess.run([str(HERE / "base-image.sh"), BASE_IMAGE], check=True,
                   env={**os.environ, "DOCKER": docker_bin()})
    ctx = context()
    sizes = {}
    for name, (dockerfile, target) in IMAGES.items():
        tag = f"{PREFIX}-{name}:latest"
        started = time.monotonic()
        args = ["build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                "-f", str(HERE / dockerfile), "-t", tag, *(["--target", target] if target else []), str(ctx)]
        docker(*args, stdout=subprocess.DEVNULL)
        sizes[tag] = int(docker("image", "inspect", "-f", "{{.Size}}", tag, capture=True).stdout.strip())
        log(f"built {tag} in {time.monotonic() - started:.0f} s: {sizes[tag] / 1e6:.0f} MB")
    # The images these builds replaced, now untagged: only this project's (by label).
    docker("image", "prune", "-f", "--filter", "label=portal-stack=1", capture=True)
    return sizes


# ---------------------------------------------------------------- secrets

def make_secrets() -> None:
    """Each secret once, mode 600; the nodes' report keys derived from the master key."""
    SECRETS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    SECRETS_DIR.chmod(0o700)
    for name in TEXT_SECRETS:
        write_once(SECRETS_DIR / name, secrets.token_hex(32).encode())
    write_once(SECRETS_DIR / "slurm_jwt_key", secrets.token_bytes(32))
    write_once(SECRETS_DIR / "munge_key", secrets.token_bytes(128))
    master = (SECRETS_DIR / "health_master_key").read_text().strip()
    for node in NODES:
        path = SECRETS_DIR / f"health_key_{node}"
        path.unlink(missing_ok=True)
        write_once(path, (report.node_key(master, node) + "\n").encode())


def write_once(path: Path, data: bytes) -> None:
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


# ---------------------------------------------------------------- up / down / status

def containers() -> list[dict]:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                 capture=True).stdout.split()
    if not ids:
        return []
    return json.loads(docker("inspect", *ids, capture=True).stdout)


def service_states() -> dict[str, str]:
    """service -> healthy | starting | unhealthy | exited(N) | running (no health check)."""
    states = {}
    for c in containers():
        service = c["Config"]["Labels"].get("com.docker.compose.service", c["Name"])
        state = c["State"]
        if state.get("Health"):
            states[service] = state["Health"]["Status"] if state["Running"] else f"exited({state['ExitCode']})"
        else:
            states[service] = "running" if state["Running"] else f"exited({state['ExitCode']})"
    return states


ONE_SHOTS = ("slurm-init", "migrate")


def all_ready(states: dict[str, str]) -> bool:
    return bool(states) and all(
        s == "exited(0)" if name in ONE_SHOTS else s == "healthy" for name, s in states.items())


def check_ports_free() -> None:
    """Host networking: a port already taken (another copy of the stack under another project
    name, say) would leave a service failing its health check; say which one instead."""
    if any(c["State"]["Running"] for c in containers()):
        return  # ours, from an earlier `up`
    taken = []
    for port in PORTS:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(str(port))
    if taken:
        die(f"ports {', '.join(taken)} on 127.0.0.1 are in use; the stack needs them (compose.yaml)")


def up(*, rebuild: bool = True) -> float:
    if rebuild:
        build()
    else:
        engine()
    check_ports_free()
    make_secrets()
    started = time.monotonic()
    compose("up", "-d", "--remove-orphans")
    wait_ready(started)
    took = time.monotonic() - started
    log(f"every health check green {took:.1f} s after `up` (portal: http://127.0.0.1:18080)")
    return took


def wait_ready(started: float, timeout: float = 300) -> None:
    states: dict[str, str] = {}
    while time.monotonic() - started < timeout:
        states = service_states()
        if all_ready(states):
            return
        failed = {n: s for n, s in states.items() if s == "unhealthy" or (
            s.startswith("exited") and (n not in ONE_SHOTS or s != "exited(0)"))}
        if failed:
            die(f"failed: {failed}; `python3 docker/stack.py compose logs SERVICE` shows why")
        time.sleep(1)
    die(f"not ready after {timeout:.0f} s: {states}")


def down(volumes: bool) -> None:
    if docker("info", check=False, capture=True).returncode != 0:
        log("no docker engine running: nothing to stop")
        return
    compose("down", "--remove-orphans", *(["--volumes"] if volumes else []))


def status() -> None:
    states = service_states()
    if not states:
        log("not running")
    for name, state in sorted(states.items()):
        print(f"{name:12} {state}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up_p = sub.add_parser("up")
    up_p.add_argument("--no-build", action="store_true", help="use the images as they are")
    sub.add_parser("build")
    sub.add_parser("engine")
    sub.add_parser("secrets")
    sub.add_parser("status")
    down_p = sub.add_parser("down")
    down_p.add_argument("-v", "--volumes", action="store_true", help="also remove every volume (all data)")
    comp = sub.add_parser("compose")
    comp.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd in ("up", "build", "engine") and os.geteuid() != 0:
        die("run as root: it installs packages and starts dockerd")
    if args.cmd == "up":
        up(rebuild=not args.no_build)
    elif args.cmd == "build":
        build()
    elif args.cmd == "engine":
        engine()
    elif args.cmd == "secrets":
        make_secrets()
    elif args.cmd == "status":
        status()
    elif args.cmd == "down":
        down(args.volumes)
    else:
        sys.exit(compose(*args.args, check=False).returncode)


if __name__ == "__main__":
    main()
