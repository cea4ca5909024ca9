"""The checkpoint convention on the node: what the TaskProlog exports and the Prolog prepares.

Every (re)start of a job's task sees:

* ``CHECKPOINT_DIR``: the job's own (portal jobs and users who set it keep theirs); for an sbatch
  job of a portal team without one, ``<root>/<account>/<user>/slurm-<jobid>``, the same across
  requeues, created by the TaskProlog as the user (mode 700);
* ``PORTAL_RESUME_FROM``: the latest complete checkpoint there (unset when there is none);
* ``PORTAL_GENERATION``: this attempt's number (SLURM_RESTART_COUNT, 0 on the first run), also
  written to ``<CHECKPOINT_DIR>/.portal-generation`` so an older copy of the job (a hung node
  that wakes up) can see that it was superseded and must not save.

An account is a portal team when ``<root>/<account>`` exists as a real directory that only root
may change (the portal makes it for each team; a site can ``mkdir`` it). The Prolog, as root,
makes the user's level ``<root>/<account>/<user>`` (mode 700, the user's) when it is missing,
without following links and without touching anything that exists.

Nothing here may fail a job: every problem becomes a warning on stderr.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import fcntl
import os
import pwd
import re
import stat
import sys

from slurm_plugins.checkpoint_scan import (
    DIR_FLAGS,
    Refused,
    default_dir,
    latest_checkpoint,
    open_dir,
    write_generation,
)
from slurm_plugins.config import find_config_file

DEFAULT_ROOT = "/srv/portal/checkpoints"
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@=,-]{0,254}")


def checkpoint_root(environ: dict[str, str]) -> str | None:
    """[checkpoint] root from health.conf (default /srv/portal/checkpoints); None when disabled."""
    parser = configparser.ConfigParser(interpolation=None)
    path = find_config_file(environ)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except (OSError, configparser.Error) as exc:
            warn(f"health.conf unreadable ({exc}); using the default checkpoint root")
    root = parser.get("checkpoint", "root", fallback=DEFAULT_ROOT).strip()
    return root if root.startswith("/") else None


# Warnings of this run; the TaskProlog also prints them into the job's output (`print` lines),
# since slurmstepd does not show a TaskProlog's stderr to anyone.
WARNINGS: list[str] = []


def warn(message: str) -> None:
    line = f"portal checkpoint: warning: {message}"
    WARNINGS.append(line)
    print(line, file=sys.stderr, flush=True)


def _root_only(fd: int) -> bool:
    info = os.fstat(fd)
    return info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _team_fd(root: str, account: str) -> int | None:
    """`<root>/<account>` if the account is a portal team (a root-only real directory), else None."""
    if not SAFE_NAME.fullmatch(account):
        return None
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _root_only(root_fd):
            warn(f"{root} may be changed by others than root; no default checkpoint directories")
            return None
        team_fd = os.open(account, DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    if _root_only(team_fd):
        return team_fd
    os.close(team_fd)
    warn(f"{root}/{account} may be changed by others than root; ignored")
    return None


# ---------------------------------------------------------------- Prolog (root)

def prepare_user_level(environ: dict[str, str]) -> None:
    """As root: make `<root>/<account>/<user>` (700, the user's) if the account is a team and it is missing."""
    account, user = environ.get("SLURM_JOB_ACCOUNT", ""), environ.get("SLURM_JOB_USER", "")
    root = checkpoint_root(environ)
    if root is None or not SAFE_NAME.fullmatch(user) or os.geteuid() != 0:
        return
    team_fd = _team_fd(root, account)
    if team_fd is None:
        return
    try:
        entry = pwd.getpwnam(user)
        fcntl.flock(team_fd, fcntl.LOCK_EX)  # the job's other nodes, and the portal, may race
        try:
            os.mkdir(user, 0o700, dir_fd=team_fd)
        except FileExistsError:
            return  # whatever exists is never chowned; the TaskProlog checks its owner
        fd = os.open(user, DIR_FLAGS, dir_fd=team_fd)
        try:
            os.fchmod(fd, 0o700)
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        finally:
            os.close(fd)
    finally:
        os.close(team_fd)


# ---------------------------------------------------------------- TaskProlog (the user)

def task_lines(environ: dict[str, str]) -> list[str]:
    """The `export`/`unset` lines for this task's environment."""
    generation = _generation(environ)
    lines = [f"export PORTAL_GENERATION={generation}"]
    directory = environ.get("CHECKPOINT_DIR", "")
    if not directory:
        directory = _default_dir(environ)
        if directory:
            lines.append(f"export CHECKPOINT_DIR={directory}")
    resume = _prepare(directory, generation) if directory else None
    lines.append(f"export PORTAL_RESUME_FROM={resume}" if resume else "unset PORTAL_RESUME_FROM")
    return lines


def _generation(environ: dict[str, str]) -> int:
    try:
        return max(0, int(environ.get("SLURM_RESTART_COUNT", "0")))
    except ValueError:
        return 0


def _default_dir(environ: dict[str, str]) -> str | None:
    """`<root>/<account>/<user>/slurm-<jobid>` for a portal team's job, created as the user."""
    account, job_id = environ.get("SLURM_JOB_ACCOUNT", ""), environ.get("SLURM_JOB_ID", "")
    root = checkpoint_root(environ)
    user = pwd.getpwuid(os.getuid()).pw_name
    if root is None or not job_id.isdigit():
        return None
    team_fd = _team_fd(root, account)
    if team_fd is None:
        return None
    try:
        user_fd = os.open(user, DIR_FLAGS, dir_fd=team_fd)
    except OSError as exc:
        warn(f"{root}/{account}/{user}: {os.strerror(exc.errno or errno.EIO)}; no default CHECKPOINT_DIR")
        return None
    finally:
        os.close(team_fd)
    try:
        if os.fstat(user_fd).st_uid != os.getuid():
            warn(f"{root}/{account}/{user} is not yours; no default CHECKPOINT_DIR")
            return None
        name = f"slurm-{int(job_id)}"
        # Exists on a requeue: the same directory as before (its owner is checked in _prepare).
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=user_fd)
    finally:
        os.close(user_fd)
    return default_dir(root, account, user, int(job_id))


def _prepare(directory: str, generation: int) -> str | None:
    """Bump the generation file and find the checkpoint to resume from; None when refused or none."""
    uid = os.getuid()
    try:
        os.close(open_dir(directory, owner_uid=uid))
    except FileNotFoundError:
        return None  # the job makes its own directory later; nothing to resume yet
    except (OSError, Refused) as exc:
        warn(f"CHECKPOINT_DIR {directory} refused: {exc}")
        return None
    try:
        on_disk = write_generation(directory, generation)
        if on_disk > generation:
            warn(f"{directory} belongs to a newer attempt ({on_disk} > {generation}); saves will be refused")
    except OSError as exc:
        warn(f"cannot write the generation file in {directory}: {exc}")
    found = latest_checkpoint(directory, owner_uid=uid)
    if found is None or not found.path.isprintable():
        return None
    return found.path


def main_task_prolog() -> int:
    try:
        for line in task_lines(dict(os.environ)):
            print(line)
    except Exception as exc:  # the portal's convention must never fail a job
        warn(f"task prolog error: {type(exc).__name__}: {exc}")
    for line in WARNINGS:
        print("print " + " ".join(line.split()))  # one line, whatever the message held
    sys.stdout.flush()
    return 0


def main_prolog_part() -> None:
    try:
        prepare_user_level(dict(os.environ))
    except Exception as exc:
        warn(f"prolog: cannot prepare the checkpoint directory: {type(exc).__name__}: {exc}")
