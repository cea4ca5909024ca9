"""Read a job's stdout/stderr safely.

The viewer reads only the job's own output path as recorded from Slurm, refuses symlinks
(anywhere in the path), requires the file to belong to the job's user, and never reads more
than OUTPUT_MAX_BYTES: a job cannot use the portal to read someone else's files.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass

from django.conf import settings

from portal.jobs.models import Job


class OutputUnavailable(Exception):
    """No output to show, with a reason fit for the user."""


@dataclass(frozen=True)
class OutputChunk:
    text: str
    size: int          # the file's size now; pass it back as `offset` to follow
    offset: int        # where `text` starts in the file
    truncated: bool    # True if the start of the file (or of the new part) was skipped


def _path(job: Job, stream: str) -> str:
    path = job.stdout_path if stream == "stdout" else job.stderr_path
    if not path or not os.path.isabs(path):
        raise OutputUnavailable("Slurm has not reported an output file for this job yet.")
    if os.path.realpath(path) != os.path.normpath(path):
        raise OutputUnavailable("The output path goes through a symbolic link; the portal will not follow it.")
    return path


def _open_checked(path: str, username: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise OutputUnavailable("The output file does not exist yet (the job may not have started).") from None
    except OSError:
        raise OutputUnavailable("The output file cannot be opened (is it a symbolic link?).") from None
    info = os.fstat(fd)
    try:
        owner_uid = pwd.getpwnam(username).pw_uid
    except KeyError:
        owner_uid = -1
    if not stat.S_ISREG(info.st_mode) or info.st_uid != owner_uid:
        os.close(fd)
        raise OutputUnavailable("The output file is not a regular file owned by the job's user.")
    return fd


def read_output(job: Job, stream: str = "stdout", *, tail: int | None = None,
                offset: int | None = None) -> OutputChunk:
    """The last `tail` lines, or the bytes after `offset` (live follow), capped in size."""
    if stream not in ("stdout", "stderr"):
        raise OutputUnavailable("stream must be stdout or stderr")
    cap = settings.OUTPUT_MAX_BYTES
    fd = _open_checked(_path(job, stream), job.owner.username)
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - cap) if offset is None else min(max(0, offset), size)
        truncated = start > 0 if offset is None else size - start > cap
        if size - start > cap:
            start = size - cap
        os.lseek(fd, start, os.SEEK_SET)
        data = os.read(fd, size - start)
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    if tail is not None and offset is None:
        lines = text.splitlines(keepends=True)
        truncated = truncated or len(lines) > tail
        text = "".join(lines[-tail:]) if tail > 0 else ""
    return OutputChunk(text=text, size=size, offset=start, truncated=truncated)
