"""A throwaway copy of the demo's deployment for tests/core/test_deploy_*.py.

`Deployment.start()` runs scripts/services.sh with a var directory and ports of its own, so
the tests see exactly what `make demo` builds (own PostgreSQL and Redis, generated passwords)
without touching the checkout's instances, the machine's servers or other test runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ROOT

SERVICES = str(ROOT / "scripts/services.sh")
# Settings this deployment must not inherit from the test run's environment (helper.env etc.).
_OVERRIDES = ("PORTAL_DB_", "PORTAL_REDIS_", "PORTAL_BROKER_URL", "PORTAL_RESULT_BACKEND",
              "PORTAL_CACHE_URL", "PORTAL_VAR_DIR", "PORTAL_LOG_", "DJANGO_SETTINGS_MODULE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Deployment:
    var: Path
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)

    @classmethod
    def create(cls) -> Deployment:
        # Under /tmp (mode 1777), not pytest's tmp_path (mode 700 under /tmp/pytest-of-root):
        # the servers run as the users postgres and redis and must reach their directories.
        var = Path(tempfile.mkdtemp(prefix="portal-deploy-"))
        var.chmod(0o755)
        if (ROOT / "var/static").is_dir():   # collected static files, for the pages
            (var / "static").symlink_to(ROOT / "var/static")
        return cls(var=var)

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OVERRIDES)}
        return {**base, "PORTAL_VAR_DIR": str(self.var), "PORTAL_DB_PORT": str(self.pg_port),
                "PORTAL_REDIS_PORT": str(self.redis_port), **extra}

    def services(self, action: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([SERVICES, action], env=self.env(**extra), capture_output=True,
                              text=True, timeout=120, check=False)

    def manage(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "manage.py"), *args],
                              env=self.env(**extra), capture_output=True, text=True, timeout=120,
                              check=False, cwd=ROOT)

    def secret(self, name: str) -> str:
        return (self.var / name).read_text().strip()

    def destroy(self) -> None:
        self.services("stop")
        shutil.rmtree(self.var, ignore_errors=True)

    # ---- the PostgreSQL instance's processes, for freezing it
    def postgres_pids(self) -> list[int]:
        """The postmaster and its children: only this deployment's instance."""
        postmaster = int((self.var / "pg/postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True,
                                  check=False).stdout.split()
        return [postmaster, *map(int, children)]

    def signal_postgres(self, sig: signal.Signals) -> None:
        for pid in self.postgres_pids():
            os.kill(pid, sig)


@dataclass
class Web:
    """gunicorn started as scripts/portal.sh starts it: --daemon with scripts/gunicorn.conf.py."""
    deployment: Deployment
    log_dir: Path
    settings_module: str = "portal.settings"
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **extra: str) -> None:
        env = self.deployment.env(PORTAL_LOG_DIR=str(self.log_dir), PORTAL_LOG_NAME="web",
                                  DJANGO_SETTINGS_MODULE=self.settings_module, **extra)
        subprocess.run([str(ROOT / ".venv/bin/gunicorn"), "portal.wsgi:application",
                        "--config", str(ROOT / "scripts/gunicorn.conf.py"), "--daemon",
                        "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
                        "--pid", str(self.log_dir / "web.pid")],
                       env=env, cwd=ROOT, check=True, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/accounts/login/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"gunicorn did not answer; see {self.log_dir}")

    def stop(self) -> None:
        pid_file = self.log_dir / "web.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
