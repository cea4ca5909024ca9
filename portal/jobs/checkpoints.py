"""Checkpoint directories: which paths a user may name, and creating them without root's powers.

The portal runs as root so that each job gets a directory its user owns. A path a user typed
must never let root act on anything that is not that user's:

* allowed: `<CHECKPOINT_ROOT>/<team>/<user>/…` for the user's own teams, or below their home;
* every part of the path is plain ASCII (no `..`, no lookalike dots, no spaces or controls);
* root creates only the two levels that live in root-owned directories, `<team>` and
  `<team>/<user>`, walking with O_NOFOLLOW descriptors; a `<user>` level that already exists
  must be the user's and is never chowned;
* below the user's own directory, a job's new directory (the default) is made and chowned in
  the root-only `<team>` level and then renamed into place; anything else is made by a child
  process running as the user, so the kernel's own permission checks apply. Root never chowns
  anything that already exists there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pwd
import re
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger(__name__)

FIELD = "checkpoint_dir"
# Conservative on purpose: anything else (spaces, the U+2024 dot leader, controls) could be mistaken for
# something it is not by a person reading the path, or by code comparing it.
SAFE_PART = re.compile(r"[A-Za-z0-9_.+@=,-]{1,255}")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class CheckpointRefused(ValueError):
    """The checkpoint directory may not be used or could not be made; the message says why."""

    field = FIELD


@dataclass(frozen=True)
class CheckpointPath:
    """A checked path: under the checkpoint tree (`team` set) or the user's home (`team` None)."""

    path: str
    team: str | None
    below: tuple[str, ...]   # the parts under the user's own directory, made as the user


def default_path(team: str, username: str, job_uuid) -> str:
    return "/".join([settings.CHECKPOINT_ROOT.rstrip("/"), team, username, str(job_uuid)])


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _parts(path: str) -> list[str]:
    if not path.startswith("/"):
        raise CheckpointRefused("Give an absolute path, starting with /.")
    parts = path[1:].removesuffix("/").split("/")
    for part in parts:
        if part == "" or set(part) == {"."}:
            raise CheckpointRefused("The path may not contain empty, '.' or '..' parts.")
        if not SAFE_PART.fullmatch(part):
            raise CheckpointRefused(f"{part!r}: use only ASCII letters, digits and . _ - + @ = , "
                                    "in each part of the path (no spaces).")
    return parts


def _home_parts(username: str) -> list[str] | None:
    try:
        return _split(pwd.getpwnam(username).pw_dir)
    except KeyError:
        return None


def check(path: str, *, username: str, teams: Iterable[str]) -> CheckpointPath:
    """The path, normalised, if `username` may use it; CheckpointRefused otherwise."""
    parts = _parts(path)
    root = _split(settings.CHECKPOINT_ROOT)
    normal = "/" + "/".join(parts)
    if parts[:len(root)] == root:
        team_user = parts[len(root):len(root) + 2]
        if len(team_user) < 2 or team_user[1] != username or team_user[0] not in set(teams):
            raise CheckpointRefused(f"Under {'/' + '/'.join(root)} use your own directory, "
                                    f"{'/' + '/'.join(root)}/<your team>/{username}/…")
        return CheckpointPath(normal, team_user[0], tuple(parts[len(root) + 2:]))
    home = _home_parts(username)
    if home and len(parts) > len(home) and parts[:len(home)] == home:
        return CheckpointPath(normal, None, tuple(parts[len(home):]))
    raise CheckpointRefused(f"Checkpoints must live under {settings.CHECKPOINT_ROOT.rstrip('/')}/<your team>/"
                            f"{username}/ or in your home directory.")


def prepare(path: str, *, username: str, teams: Iterable[str]) -> None:
    """Make sure the job's checkpoint directory exists and belongs to the user.

    A portal running unprivileged cannot do this; then the site provisions the root and the
    job creates its own directory (examples/ show `mkdir -p "$CHECKPOINT_DIR"`).
    """
    checked = check(path, username=username, teams=teams)
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(username)
    if checked.team is None:
        _make_below(_open_home(entry), None, checked.below, entry)
        return
    team_fd = _team_dir(checked.team)
    try:
        _make_below(_user_dir(team_fd, checked.team, entry), team_fd, checked.below, entry)
    finally:
        os.close(team_fd)


def _make_below(base: int, staging: int | None, parts: tuple[str, ...], entry: pwd.struct_passwd) -> None:
    """Create `parts` under the user's own directory `base` (closed afterwards)."""
    try:
        if staging is not None and len(parts) == 1 and _move_in_fresh(staging, base, parts[0], entry):
            return
        _make_as_user(base, parts, entry)
    finally:
        os.close(base)


# ---------------------------------------------------------------- the root-owned levels

def ensure_team_dir(team: str) -> None:
    """Make `<root>/<team>` (root's, 0755) if missing; CheckpointRefused when it cannot be."""
    _parts(f"/{team}")  # a team name is one safe path part
    os.close(_team_dir(team))


def _team_dir(team: str) -> int:
    """A descriptor of `<root>/<team>`, made root's and 0755 if missing."""
    try:
        root = os.open(settings.CHECKPOINT_ROOT, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("checkpoint root %s unusable: %s", settings.CHECKPOINT_ROOT, exc)
        raise CheckpointRefused("The checkpoint root is not available on this portal; ask an admin.") from None
    try:
        _require_root_only(root, settings.CHECKPOINT_ROOT)
        team_fd = _open_or_make(root, team, mode=0o755)
    finally:
        os.close(root)
    try:
        _require_root_only(team_fd, team)
    except CheckpointRefused:
        os.close(team_fd)
        raise
    return team_fd


def _user_dir(team_fd: int, team: str, entry: pwd.struct_passwd) -> int:
    """A descriptor of `<root>/<team>/<user>`, made the user's and 0700 if missing, else the user's own."""
    user_fd = _open_or_make(team_fd, entry.pw_name, mode=0o700, owner=entry)
    if os.fstat(user_fd).st_uid != entry.pw_uid:
        os.close(user_fd)
        raise CheckpointRefused(f"{team}/{entry.pw_name} in the checkpoint root is not yours; ask an admin.")
    return user_fd


def _move_in_fresh(staging: int, base: int, name: str, entry: pwd.struct_passwd) -> bool:
    """A job's own new directory, the common case, without a child process.

    It is made and chowned in the root-only team level, where no user can swap it for
    something else, then renamed into place. False when `name` already exists (the walk as
    the user then checks it) or the move fails.
    """
    try:
        os.stat(name, dir_fd=base, follow_symlinks=False)
        return False
    except FileNotFoundError:
        pass
    temp = f".new-{uuid.uuid4().hex}"
    os.mkdir(temp, 0o700, dir_fd=staging)
    try:
        fd = os.open(temp, DIR_FLAGS, dir_fd=staging)
        try:
            os.fchmod(fd, 0o700)
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=staging, dst_dir_fd=base)
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(temp, dir_fd=staging)
        return False
    return True


def _require_root_only(fd: int, what: str) -> None:
    """Only root may change the entries of a level root creates in, or a user could swap them."""
    info = os.fstat(fd)
    if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("checkpoint directory %s is not root-only (uid %s, mode %o)", what, info.st_uid, info.st_mode)
        raise CheckpointRefused(f"The checkpoint directory {what} is writable by others; ask an admin.")


def _open_or_make(parent: int, name: str, *, mode: int, owner: pwd.struct_passwd | None = None) -> int:
    """Open `name` in `parent` without following a symlink; create it first if missing.

    Only a directory made here is chowned. The lock serialises two portal processes making the
    same level at once (the loser would otherwise see it still root's).
    """
    fcntl.flock(parent, fcntl.LOCK_EX)
    try:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, mode, dir_fd=parent)
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
        return fd
    except OSError as exc:
        raise CheckpointRefused(f"{name}: {_reason(exc.errno)}") from None
    finally:
        fcntl.flock(parent, fcntl.LOCK_UN)


def _open_home(entry: pwd.struct_passwd) -> int:
    try:
        return os.open(entry.pw_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise CheckpointRefused("Your home directory does not exist on this portal.") from None


# ---------------------------------------------------------------- below: as the user

def _reason(code: int | None) -> str:
    if code in {errno.ELOOP, errno.ENOTDIR}:
        return "is a symbolic link or not a directory (links are not followed)"
    if code in {errno.EACCES, errno.EPERM, errno.EROFS}:
        return "you may not create or write it"
    return os.strerror(code or errno.EIO)


def _make_as_user(base: int, parts: tuple[str, ...], entry: pwd.struct_passwd) -> None:
    """Create `parts` below `base` in a child process that has become the user.

    Everything the child needs is computed here: after fork only system calls run, since
    another thread may have held a lock (NSS, logging) at the moment of the fork.
    """
    if not parts:
        return
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's work is seen through its report
        os.close(reader)
        _child(base, parts, entry, groups, writer)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    if report != "ok":
        index, _, code = report.partition(":")
        where = "/".join(parts[:int(index) + 1]) if index.isdigit() else "/".join(parts)
        raise CheckpointRefused(f"{where}: {_reason(int(code) if code.isdigit() else None)}")


def _child(base: int, parts: tuple[str, ...], entry: pwd.struct_passwd, groups: list[int], out: int) -> None:
    report = f"x:{errno.EIO}"
    try:
        os.setgroups(groups)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        os.umask(0o077)
        report = _walk(base, parts)
    finally:
        os.write(out, report.encode())
        os._exit(0)


def _walk(fd: int, parts: tuple[str, ...]) -> str:
    """Open or make each part in turn ("ok"), or say where it stopped ("index:errno")."""
    parent = fd
    for index, name in enumerate(parts):
        parent = fd
        try:
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):  # a twin submit made it meanwhile
                    os.mkdir(name, 0o700, dir_fd=parent)
                fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            return f"{index}:{exc.errno}"
    # An existing directory the user cannot write would only fail the job later.
    if not os.access(parts[-1], os.W_OK | os.X_OK, dir_fd=parent, follow_symlinks=False):
        return f"{len(parts) - 1}:{errno.EACCES}"
    return "ok"
