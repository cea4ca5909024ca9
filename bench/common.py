"""Shared helpers for the benchmarks: a bench database, a real gunicorn, percentiles, machine info.

Benchmarks print their figures; they assert nothing. Run them from the repo root with the
project's virtualenv, e.g. `.venv/bin/python bench/job_list.py`.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python")
CTL = str(ROOT / "cluster/ctl")
HEALTH_CONF = ROOT / "cluster/state/etc/health.conf"
POLL_S = 0.05


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, Python {sys.version.split()[0]}"


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    if not ms:
        return "n=0"
    return (f"n={len(ms)} p50={percentile(ms, 50):.1f} ms  p95={percentile(ms, 95):.1f} ms  "
            f"p99={percentile(ms, 99):.1f} ms  max={max(ms):.1f} ms  mean={statistics.fmean(ms):.1f} ms")


def own_database_setup(default: str) -> str:
    """Point this process's Django at a bench database of its own (BENCH_DB_NAME, else `default`),
    made and migrated if needed, then set Django up. Never PORTAL_DB_NAME: a working database's
    teams (vision, nlp) would then be managed by the bench too. Returns the database name."""
    import django  # noqa: PLC0415  (benches that do not use Django import this module too)

    name = os.environ.get("BENCH_DB_NAME", default)
    os.environ["PORTAL_DB_NAME"] = name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
    ensure_database(name)
    django.setup()
    return name


def ensure_database(name: str) -> dict[str, str]:
    """Create (if needed) and migrate a bench database; returns the env that selects it."""
    env = {**os.environ, "PORTAL_DB_NAME": name, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    if not name.isidentifier():
        raise ValueError(f"bench database names are plain identifiers, not {name!r}")
    # As the portal's own role (CREATEDB), through settings: no superuser, no password typed.
    create = ("import django; django.setup()\n"  # noqa: S608 - name is an identifier, checked above
              "from django.db import connection\n"
              "with connection._nodb_cursor() as cur:\n"
              f"    cur.execute('select 1 from pg_database where datname = %s', [{name!r}])\n"
              f"    cur.fetchone() or cur.execute('create database \"{name}\"')\n")
    subprocess.run([PY, "-c", create], cwd=ROOT, env=env, check=True)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LOG_DIR = ROOT / "var/log/bench"


@contextmanager
def gunicorn(env: dict[str, str], *, workers: int | None = None, threads: int = 1):
    """A real gunicorn serving the portal exactly as `make demo` does (scripts/portal.sh): the
    shipped config file (error and access logs to rotated files), 2 x cores + 1 single-threaded
    workers, keep-alive 10 s, the web's database timeouts; yields its base URL. Logs go to
    var/log/bench/."""
    workers = workers or 2 * (os.cpu_count() or 1) + 1
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**env, "PORTAL_LOG_DIR": str(LOG_DIR), "PORTAL_LOG_NAME": "web"}
    proc = subprocess.Popen([str(ROOT / ".venv/bin/gunicorn"), "portal.wsgi:application",
                             "--config", str(ROOT / "scripts/gunicorn.conf.py"), "--bind",
                             f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
                             "--keep-alive", "10"], cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection from the standard library, for load generators.

    A few hundred microseconds of CPU per request, where httpx costs several milliseconds:
    on a two-core machine the load generator shares the CPUs with the server it measures.
    Not thread-safe: one per thread.
    """

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port, self.headers = host, int(port), headers
        self.conn: http.client.HTTPConnection | None = None

    def post_json(self, path: str, body: dict, headers: dict[str, str]) -> tuple[int, bytes]:
        payload = json.dumps(body).encode()
        for attempt in (1, 2):   # the server may have closed an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("POST", path, payload, {**self.headers, **headers,
                                                          "Content-Type": "application/json"})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def start_celery(queue: str, workdir: str, env: dict[str, str]) -> list[subprocess.Popen]:
    """A real Celery worker and beat on a private queue, as separate processes like `make demo`.

    Each gets its own session so stop_celery can end it with whatever it forked.
    """
    celery = str(ROOT / ".venv/bin/celery")
    # The database timeouts scripts/portal.sh gives the worker and beat.
    env = {**env, "PORTAL_DB_STATEMENT_TIMEOUT": "60", "PORTAL_DB_LOCK_TIMEOUT": "30"}
    common = {"cwd": ROOT, "env": env, "start_new_session": True}
    worker = subprocess.Popen([celery, "-A", "workers.celery", "worker", "-Q", queue, "-c", "2", "-n", f"{queue}@%h",
                               "--loglevel=WARNING", "--without-gossip", "--without-mingle"], **common)
    beat = subprocess.Popen([celery, "-A", "workers.celery", "beat", "-s", f"{workdir}/beat-schedule", "--pidfile=",
                             "--loglevel=WARNING"], **common)
    return [worker, beat]


def stop_celery(procs: list[subprocess.Popen], queue: str, app) -> None:
    """Stop beat first (so nothing new is queued), then the worker; drop what is left queued."""
    for proc in reversed(procs):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


# ---------------------------------------------------------------- the cluster, for fault benches

def sinfo(node: str) -> tuple[str, str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"], capture_output=True, text=True,
                         check=False).stdout.strip().splitlines()
    state, _, reason = (out[0] if out else "").partition("|")
    return state, reason


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until predicate() holds, polling every POLL_S; None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(POLL_S)
    return None


def portal_url() -> str:
    match = re.search(r"^url\s*=\s*(\S+)", HEALTH_CONF.read_text(), re.MULTILINE)
    return match.group(1) if match else "http://127.0.0.1:8000"


def point_sensors(url: str) -> None:
    """The supported way to move the sensors: ctl up rewrites health.conf from PORTAL_HEALTH_URL."""
    subprocess.run([CTL, "up"], env={**os.environ, "PORTAL_HEALTH_URL": url}, check=True, capture_output=True)
    if portal_url() != url:
        raise SystemExit(f"health.conf still says {portal_url()}, not {url}")


# ---- the recovery benches' helpers (requeue.py, ettr.py)

def run(args: list[str], **kw) -> str:
    """A command's stdout; an argument list, never a shell; fails loudly."""
    return subprocess.run(args, capture_output=True, text=True, check=True, **kw).stdout


def job_fields(job_id: int) -> dict[str, str]:
    """`scontrol -o show job` as a dict (empty once Slurm has forgotten the job)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True,
                         check=False).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_output(out_dir: Path, job_id: int) -> str:
    """A bench job's output file (`-o DIR/%j.out`), "" before it exists."""
    try:
        return (out_dir / f"{job_id}.out").read_text()
    except FileNotFoundError:
        return ""



def loopback_quickack() -> bool:
    """Whether the loopback route ACKs at once (cluster/ctl up sets `quickack 1`)."""
    out = subprocess.run(["ip", "route", "show", "table", "local", "127.0.0.0/8"], capture_output=True, text=True,
                         check=False).stdout
    return "quickack 1" in out


def set_loopback_quickack(on: bool) -> None:
    """Turn the loopback routes' quickack on or off (a bench's named setting; put it back after)."""
    for prefix in ("127.0.0.0/8", "127.0.0.1"):
        route = subprocess.run(["ip", "route", "show", "table", "local", prefix], capture_output=True, text=True,
                               check=True).stdout.split()
        if "quickack" in route:
            at = route.index("quickack")
            del route[at:at + 2]
        subprocess.run(["ip", "route", "change", *route, "table", "local", "quickack", "1" if on else "0"],
                       check=True, capture_output=True)


# ---------------------------------------------------------------- which Slurm release
# `--on host|trixie|sid`: the host's own cluster, or cluster/rootcluster.py's mini cluster of
# that Debian suite (Slurm 24.11 / 26.05), which the bench starts and stops. The portal then
# negotiates that slurmrestd's API version and runs its CLI half in the root.

# bookworm: a 22.05 mini cluster from a Debian root, so that 22.05 and 24.11 (trixie) can be
# measured on equal terms: same size, no hooks, every client call through chroot on both.
SUITES = ("host", "bookworm", "trixie", "sid", "local-24.11", "local-26.05")
# `--on local-24.11`: the whole local cluster (ten nodes, the hooks) switched to that release
# (`./cluster/ctl up --slurm 24.11`) and back to the host's after; like for like with "host",
# where a mini cluster has two nodes and no hooks.
LOCAL = "local-"


def cluster_env(suite: str, *, start: bool = True) -> tuple[dict[str, str], str, str]:
    """The portal's settings for `suite` (none for "host"), the root ("" for the host), and
    the Slurm version it runs. Starts a root's mini cluster unless `start` is False (a no-op
    when it runs already)."""
    if suite.startswith(LOCAL) and start:
        proc = subprocess.run([CTL, "up", "--slurm", suite.removeprefix(LOCAL)], capture_output=True, text=True,
                              check=False)
        if proc.returncode:
            raise SystemExit(f"bench: the local cluster did not start on {suite}: {proc.stdout + proc.stderr}")
    if suite == "host" or suite.startswith(LOCAL):
        return {}, "", subprocess.run(["sinfo", "--version"], capture_output=True, text=True,
                                      check=False).stdout.strip()
    ctl = [sys.executable, str(ROOT / "cluster/rootcluster.py")]
    if start:
        proc = subprocess.run([*ctl, "start", suite], capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"bench: the {suite} mini cluster did not start: {proc.stdout + proc.stderr}")
    lines = subprocess.run([*ctl, "env", suite], check=True, capture_output=True, text=True).stdout.splitlines()
    found = dict(line.removeprefix("export ").split("=", 1) for line in lines if "=" in line)
    root = found["SLURM_V11_ROOT"]
    env = {"SLURM_REST_URL": found["SLURM_V11_REST_URL"], "SLURM_JWT_KEY_FILE": found["SLURM_V11_JWT_KEY"],
           "SLURM_CLI_ROOT": root, "SLURM_CLUSTER": found["SLURM_V11_CLUSTER"], "SLURM_API_VERSION": "auto"}
    return env, root, Path(root, ".v11-root-finished").read_text().strip()


def alternating(suites: list[str], rounds: int, measure):
    """Yield (round, suite, version, result) with `measure(extra_env, root)` run on each cluster in
    turn, `rounds` times (host, trixie, host, trixie, ...): this VM's speed drifts by tens of
    percent over minutes, which one pass per cluster would read as a difference between them."""
    for round_no in range(1, rounds + 1):
        for suite in suites:
            extra, root, version = cluster_env(suite)
            try:
                result = measure(extra, root)
            finally:
                stop_cluster(suite)
            yield round_no, suite, version, result


def stop_cluster(suite: str) -> None:
    if suite.startswith(LOCAL):
        # Back to the host's own release: a stopped cluster starts on it.
        subprocess.run([CTL, "down"], capture_output=True, check=False)
        subprocess.run([CTL, "up"], capture_output=True, check=False)
    elif suite != "host":
        subprocess.run([sys.executable, str(ROOT / "cluster/rootcluster.py"), "stop", suite],
                       capture_output=True, check=False)


def slurm_command(root: str, user: str | None = None) -> list[str]:
    """The prefix that runs a Slurm command on the cluster of `root` ("" for the host), as `user`
    (None: root): a root's own clients, since a 22.05 client cannot talk to a 24.11 slurmctld."""
    if root:
        sys.path.insert(0, str(ROOT))
        from portal.slurm.transport import chroot_prefix  # noqa: PLC0415 - no Django needed

        return chroot_prefix(root, user)
    return ["runuser", "-u", user, "--"] if user else []
