"""Find a job's latest COMPLETE checkpoint; the checkpoint convention's names.

Standard library only: the Slurm TaskProlog (as the job's user), the Prolog (as root) and the
portal (as root) all import it. A checkpoint counts only once the file that its writer writes
LAST exists, so a job killed in the middle of a save is never resumed from half a checkpoint:

* ``example``: ``checkpoint.json`` at the top of the directory, written atomically (temp file +
  rename) by examples/train_with_checkpoints.py; a JSON object with an integer ``step``.
* ``torchtitan``: ``step-N/`` directories; one counts when its ``.metadata`` exists (DCP
  writes it last). The newest is the highest N.
* ``megatron``: ``latest_checkpointed_iteration.txt`` holds an iteration number (or
  ``release``); Megatron writes it after the ``iter_%07d`` (or ``release``) directory it names,
  which must exist.
* ``marker``: any subdirectory holding ``PORTAL_COMPLETE`` (empty, an integer step, or JSON with
  ``step``) or ``manifest.json`` (a JSON object, optionally with ``step``), written last.

Each format is also looked for one level down (``$CHECKPOINT_DIR/checkpoint/step-N`` is how
torchtitan lays out its dump folder). Within a format the highest step wins (ties: the later
completion); across formats the latest completion wins.

Safety: no symlink is ever followed (every open is relative to a directory descriptor with
O_NOFOLLOW), only regular files are read (O_NONBLOCK, so a FIFO cannot block), reads are
capped, garbage is ignored, and the whole scan touches at most MAX_ENTRIES directory entries:
it never raises for anything it finds on disk.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass

GENERATION_FILE = ".portal-generation"
EXAMPLE_FILE = "checkpoint.json"
TORCHTITAN_METADATA = ".metadata"
MEGATRON_TRACKER = "latest_checkpointed_iteration.txt"
MARKER_FILES = ("PORTAL_COMPLETE", "manifest.json")
# The TaskProlog's budget is ~100 ms; a directory with thousands of entries is cut short
# rather than slowing every task start.
MAX_ENTRIES = 512
MAX_READ = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FOLLOW_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
STEP_DIR = re.compile(r"step-(\d{1,18})")
TRAILING_DIGITS = re.compile(r"(\d{1,18})$")
EXAMPLE_STEP = re.compile(rb'^\s*\{\s*"step"\s*:\s*(\d{1,18})\s*[,}]')


@dataclass(frozen=True)
class Checkpoint:
    path: str
    step: int | None
    completed_at: float
    format: str


class Refused(Exception):
    """The directory itself may not be scanned (a symlink, not a directory, someone else's)."""


def default_dir(root: str, account: str, user: str, job_id: int) -> str:
    """Where an sbatch job of a portal team checkpoints unless it names its own directory."""
    return "/".join([root.rstrip("/"), account, user, f"slurm-{int(job_id)}"])


def latest_checkpoint(directory: str, *, owner_uid: int | None = None) -> Checkpoint | None:
    """The newest complete checkpoint in `directory`, or None (also when it cannot be read).

    `owner_uid`: refuse (None) unless the directory belongs to that user; root callers pass the
    job's user so that a path leading into another user's tree shows nothing.
    """
    try:
        fd = open_dir(directory, owner_uid=owner_uid)
    except (OSError, Refused):
        return None
    try:
        return _Scan(directory, fd).latest()
    except OSError:
        return None
    finally:
        os.close(fd)


def open_dir(directory: str, *, owner_uid: int | None = None) -> int:
    """A descriptor of `directory`; Refused/OSError otherwise.

    Without `owner_uid` a symlink is refused. With it, the path may end in a link (a user's
    ``~/ckpt -> /scratch/...``): what it leads to must belong to that user, so a link into
    another user's tree is refused.
    """
    fd = os.open(directory, DIR_FLAGS if owner_uid is None else DIR_FLAGS & ~os.O_NOFOLLOW)
    info = os.fstat(fd)
    if owner_uid is not None and info.st_uid != owner_uid:
        os.close(fd)
        raise Refused(f"{directory} belongs to uid {info.st_uid}, not {owner_uid}")
    return fd


def read_generation(directory: str) -> int | None:
    """The attempt number in `<directory>/.portal-generation`, or None (missing, garbage, a link)."""
    try:
        fd = os.open(directory, FOLLOW_DIR_FLAGS)
    except OSError:
        return None
    try:
        return _parse_int(_read_small(fd, GENERATION_FILE, 64))
    finally:
        os.close(fd)


def write_generation(directory: str, generation: int) -> int:
    """Record `generation` unless a newer one is there; returns the generation now on disk.

    Monotonic on purpose: a late task of an old attempt (a woken hung node) must never lower it.
    Written atomically (temp file + rename) so readers see the old number or the new one.
    Runs as the job's user, so the directory may be reached through the user's own link.
    """
    fd = os.open(directory, FOLLOW_DIR_FLAGS)
    try:
        current = _parse_int(_read_small(fd, GENERATION_FILE, 64))
        if current is not None and current >= generation:
            return current
        temp = f"{GENERATION_FILE}.{os.getpid()}.tmp"
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                      dir_fd=fd)
        try:
            os.write(out, f"{generation}\n".encode())
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(temp, GENERATION_FILE, src_dir_fd=fd, dst_dir_fd=fd)
        return generation
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading safely

def _read_small(dir_fd: int, name: str, limit: int = MAX_READ) -> bytes | None:
    """A regular file's first `limit` bytes, or None (missing, a link, a FIFO, unreadable)."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _file_mtime(dir_fd: int, name: str) -> float | None:
    """mtime of a regular file (not a link) in `dir_fd`, or None."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return info.st_mtime if stat.S_ISREG(info.st_mode) else None


def _parse_int(data: bytes | None) -> int | None:
    if data is None:
        return None
    try:
        value = int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return value if value >= 0 else None


def _json_object(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _step_of(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _best(candidates: list[Checkpoint]) -> Checkpoint | None:
    """Highest step first (a step of None counts lowest), then the later completion."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (-1 if c.step is None else c.step, c.completed_at))


# ---------------------------------------------------------------- the scan

class _Scan:
    """One bounded walk of a checkpoint directory and (one level of) its subdirectories."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path.rstrip("/") or "/", fd
        self.budget = MAX_ENTRIES

    def latest(self) -> Checkpoint | None:
        found = self._formats(self.fd, self.path, nested=True)
        return max(found, key=lambda c: c.completed_at) if found else None

    def _entries(self, fd: int) -> list[tuple[str, bool]]:
        """(name, is a real directory) of up to the remaining budget; links are never directories."""
        out = []
        with os.scandir(fd) as it:
            for entry in it:
                if self.budget <= 0:
                    break
                self.budget -= 1
                try:
                    out.append((entry.name, entry.is_dir(follow_symlinks=False)))
                except OSError:
                    continue
        return out

    def _formats(self, fd: int, path: str, *, nested: bool) -> list[Checkpoint]:
        entries = self._entries(fd)
        dirs = [name for name, is_dir in entries if is_dir]
        names = {name for name, _ in entries}
        found = [c for c in (
            self._example(fd, path) if EXAMPLE_FILE in names else None,
            self._megatron(fd, path) if MEGATRON_TRACKER in names else None,
            self._torchtitan(fd, path, dirs),
            self._markers(fd, path, dirs),
        ) if c is not None]
        if nested:
            claimed = {c.path.rsplit("/", 1)[-1] for c in found}
            for name in dirs:
                if name not in claimed and not STEP_DIR.fullmatch(name) and not name.startswith("iter_"):
                    found += self._below(fd, path, name)
        return found

    def _below(self, fd: int, path: str, name: str) -> list[Checkpoint]:
        if self.budget <= 0:
            return []
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            return []
        try:
            return self._formats(sub, f"{path}/{name}", nested=False)
        except OSError:
            return []
        finally:
            os.close(sub)

    def _example(self, fd: int, path: str) -> Checkpoint | None:
        mtime = _file_mtime(fd, EXAMPLE_FILE)
        if mtime is None:
            return None
        data = _read_small(fd, EXAMPLE_FILE, MAX_READ + 1)
        if data is not None and len(data) > MAX_READ:
            # Too big to parse here (model state in it): it was renamed into place, so it is
            # complete; the step is the first key the example writes.
            match = EXAMPLE_STEP.search(data[:4096])
            step = int(match.group(1)) if match else None
        else:
            step = _step_of((_json_object(data) or {}).get("step"))
        return None if step is None else Checkpoint(f"{path}/{EXAMPLE_FILE}", step, mtime, "example")

    def _megatron(self, fd: int, path: str) -> Checkpoint | None:
        mtime = _file_mtime(fd, MEGATRON_TRACKER)
        text = (_read_small(fd, MEGATRON_TRACKER, 64) or b"").strip()
        if mtime is None:
            return None
        step = _parse_int(text)
        name = "release" if text == b"release" else (f"iter_{step:07d}" if step is not None else None)
        if name is None or not self._is_dir(fd, name):
            return None
        return Checkpoint(f"{path}/{name}", step, mtime, "megatron")

    def _torchtitan(self, fd: int, path: str, dirs: list[str]) -> Checkpoint | None:
        steps = sorted(((int(m.group(1)), name) for name in dirs if (m := STEP_DIR.fullmatch(name))),
                       reverse=True)
        for step, name in steps[:64]:
            mtime = self._inner_mtime(fd, name, TORCHTITAN_METADATA)
            if mtime is not None:
                return Checkpoint(f"{path}/{name}", step, mtime, "torchtitan")
        return None

    def _markers(self, fd: int, path: str, dirs: list[str]) -> Checkpoint | None:
        found = []
        for name in dirs:
            if self.budget <= 0:
                break
            if STEP_DIR.fullmatch(name):
                continue
            self.budget -= 1
            marker = self._marker(fd, name)
            if marker is not None:
                found.append(Checkpoint(f"{path}/{name}", marker[0], marker[1], "marker"))
        return _best(found)

    def _marker(self, fd: int, name: str) -> tuple[int | None, float] | None:
        """(step, completed_at) of a subdirectory holding a marker file, or None."""
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            return None
        try:
            for marker in MARKER_FILES:
                mtime = _file_mtime(sub, marker)
                if mtime is None:
                    continue
                step = self._marker_step(sub, marker)
                if step is False:
                    continue
                if step is None and (m := TRAILING_DIGITS.search(name)):
                    step = int(m.group(1))
                return step, mtime
            return None
        finally:
            os.close(sub)

    @staticmethod
    def _marker_step(fd: int, marker: str) -> int | bool | None:
        """The step a marker states (None: it states none); False: a manifest that is not JSON yet."""
        data = _read_small(fd, marker)
        if marker == "manifest.json":
            manifest = _json_object(data)
            return False if manifest is None else _step_of(manifest.get("step"))
        step = _parse_int(data)
        if step is None:
            step = _step_of((_json_object(data) or {}).get("step"))
        return step

    @staticmethod
    def _is_dir(fd: int, name: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    @staticmethod
    def _inner_mtime(fd: int, name: str, inner: str) -> float | None:
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            return None
        try:
            return _file_mtime(sub, inner)
        finally:
            os.close(sub)
