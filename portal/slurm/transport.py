"""The two ways the gateway reaches Slurm, each through one request function.

`rest_request` talks to slurmrestd with a JWT; `run_cli` runs a Slurm command from an
argument list (never a shell string). Both apply timeouts and turn every failure into one
of the gateway's typed errors, so callers never see httpx or subprocess exceptions.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import threading
from typing import Any

import httpx

from portal.slurm.errors import SlurmNotFound, SlurmRejected, SlurmUnavailable, SlurmUnreached

log = logging.getLogger(__name__)

# Slurm error numbers (slurm_errno.h, 22.05) that mean "no such object".
NOT_FOUND_ERRNOS = {2017, 2009, 2000}   # invalid job id, node name, partition name
ALREADY_DONE_ERRNO = 2021               # job/step already completing or completed
# Reported in `errors` although the request succeeded (e.g. a job submitted held).
INFORMATIONAL_ERRNOS = {2042}           # job is held, pending release
# 1000-1999 are communication/protocol errors, 5000+ socket errors: slurmctld unreachable.
UNAVAILABLE_RANGES = (range(1000, 2000), range(5000, 6000))

_client_lock = threading.Lock()
_clients: dict[tuple[str, float], httpx.Client] = {}


def _client(base_url: str, timeout: float) -> httpx.Client:
    """One pooled client per process; keep-alive saves a TCP handshake per call."""
    key = (base_url, timeout)
    with _client_lock:
        if key not in _clients:
            _clients[key] = httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout))
        return _clients[key]


class SlurmAlreadyDone(SlurmRejected):
    """The job already ended; callers treat a cancel of it as a no-op."""


def _errno(error: dict) -> int:
    return int(error.get("error_number") or error.get("error_code") or 0)


def raise_for_errors(errors: list[dict]) -> None:
    """Raise the gateway's typed error for Slurm's error list (nothing when all are informational)."""
    errors = [e for e in errors if _errno(e) not in INFORMATIONAL_ERRNOS]
    if not errors:
        return
    first = errors[0]
    errno = _errno(first)
    message = _message(first) or f"Slurm error {errno}"
    if errno == ALREADY_DONE_ERRNO:
        raise SlurmAlreadyDone(message)
    if errno in NOT_FOUND_ERRNOS:
        raise SlurmNotFound(message)
    if any(errno in r for r in UNAVAILABLE_RANGES):
        raise SlurmUnavailable(message)
    raise SlurmRejected(message)


def _message(error: dict) -> str:
    """Slurm's words for one error. From v0.0.40 on, `description` says what failed ("Batch job
    submission failed") and `error` why ("Invalid account or account/partition combination
    specified"): the user needs both."""
    why, what = str(error.get("error") or ""), str(error.get("description") or "")
    if why and what and why not in what:
        return f"{what}: {why}"
    return what or why


_raise_for_errors = raise_for_errors  # its name before it was shared with rest_versions


def rest_request(method: str, path: str, *, base_url: str, timeout: float, user: str, token: str,
                 json: Any = None, params: dict | None = None) -> dict | None:
    """Call slurmrestd. Returns the decoded body, or None for 304 Not Modified."""
    headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}
    # A pooled keep-alive connection may have been closed by a restarted slurmrestd; one
    # retry on a fresh connection hides that. Never for a submission: a lost answer there is
    # settled by the tracker adopting the job by its UUID, not by sending it twice.
    attempts = 1 if path.endswith("/job/submit") else 2
    for attempt in range(attempts):
        try:
            resp = _client(base_url, timeout).request(method, path, headers=headers, json=json,
                                                      params=params)
            break
        except httpx.TimeoutException:
            raise SlurmUnavailable(f"slurmrestd did not answer within {timeout:.0f}s") from None
        except httpx.TransportError as exc:
            if attempt + 1 == attempts:
                # A refused connection sent nothing: a submission retry may safely send again.
                unsent = SlurmUnreached if isinstance(exc, httpx.ConnectError) else SlurmUnavailable
                raise unsent(f"cannot reach slurmrestd at {base_url}: {exc}") from None
            log.info("retrying %s %s after a transport error: %s", method, path, exc)
    if resp.status_code == 304:
        return None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("errors"):
        raise_for_errors(body["errors"])
    if resp.status_code in (401, 403):
        raise SlurmRejected(f"slurmrestd refused the credentials for {user!r}")
    if resp.status_code == 404:
        raise SlurmNotFound(f"{path}: not found")
    if resp.status_code >= 500 or body is None:
        raise SlurmUnavailable(f"slurmrestd answered {resp.status_code} for {method} {path}")
    if resp.status_code >= 400:
        raise SlurmRejected(f"slurmrestd answered {resp.status_code} for {method} {path}")
    return body


_UNAVAILABLE_HINTS = ("Unable to contact slurm controller", "Connection refused",
                      "Socket timed out", "Unable to establish connection",
                      "Zero Bytes were transmitted", "Communication connection failure")
_NOT_FOUND_HINTS = ("Invalid job id", "Invalid node name", "Invalid partition name")


def _dropped(user: str, env: dict[str, str] | None) -> dict:
    """subprocess.run arguments that run a command as `user` with nothing of the portal's:
    that user's primary group (not root's gid 0), no supplementary groups, and a minimal
    environment (the portal's holds its database password and secret key)."""
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        raise SlurmUnavailable(f"no such local user {user!r} to run Slurm commands as") from None
    minimal = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C"}
    if os.environ.get("SLURM_CONF"):
        minimal["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return {"user": user, "group": gid, "extra_groups": [], "env": {**minimal, **(env or {})}}


def run_cli(args: list[str], *, timeout: float, env: dict[str, str] | None = None,
            user: str | None = None, root: str = "") -> str:
    """Run a Slurm command. `user` drops to that uid, its gid and a minimal environment
    (needs root), for token-authed calls: only `env` (e.g. SLURM_JWT) is passed on. `root`, a
    directory holding the cluster's own Slurm release (cluster/roots.py), runs the command in it
    with chroot: Slurm's clients must match the daemons' major version."""
    name = args[0]
    if root:
        # The root's clients read its own /etc/slurm, so no SLURM_CONF.
        args = [*chroot_prefix(root, user), *args]
        identity = {"env": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", **(env or {})}}
    else:
        identity = _dropped(user, env) if user else {"env": {**os.environ, **(env or {})}}
    try:
        proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **identity)
    except FileNotFoundError:
        raise SlurmUnavailable(f"{args[0]} is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{name} did not finish within {timeout:.0f}s") from None
    except PermissionError:
        # Dropping to another uid needs root; a portal running unprivileged cannot.
        raise SlurmUnavailable(f"not allowed to run {name} as {user!r} (the portal is not root)") from None
    if root and proc.returncode in (125, 126, 127) and proc.stderr.startswith("chroot:"):
        raise SlurmUnavailable(f"cannot run {name} in {root}: {proc.stderr.strip()}")
    return _checked(name, proc)


def chroot_prefix(root: str, user: str | None = None) -> list[str]:
    """The start of a command line that runs inside `root`, as `user` if given. The ids come
    from the root's own passwd: chroot would look names up in the host's files before entering."""
    if user is None:
        return ["chroot", root]
    uid, gid = _ids_in_root(root, user)
    return ["chroot", f"--userspec={uid}:{gid}", f"--groups={gid}", root]


def _ids_in_root(root: str, user: str) -> tuple[int, int]:
    try:
        with open(os.path.join(root, "etc/passwd")) as fh:
            for line in fh:
                parts = line.split(":")
                if parts[0] == user and len(parts) > 3:
                    return int(parts[2]), int(parts[3])
    except (OSError, ValueError):
        pass
    raise SlurmUnavailable(f"no user {user!r} in {root}/etc/passwd to run Slurm commands as")


def _checked(name: str, proc: subprocess.CompletedProcess) -> str:
    """The command's output, or its failure as the gateway's typed errors."""
    if proc.returncode == 0:
        return proc.stdout
    message = (proc.stderr.strip() or proc.stdout.strip() or f"{name} exited {proc.returncode}")
    message = message.removeprefix(f"{name}: error: ")
    if any(hint in message for hint in _UNAVAILABLE_HINTS):
        raise SlurmUnavailable(message)
    if any(hint in message for hint in _NOT_FOUND_HINTS):
        raise SlurmNotFound(message)
    if "already completing or completed" in message:
        raise SlurmAlreadyDone(message)
    raise SlurmRejected(message)
