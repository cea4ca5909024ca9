"""Log files under PORTAL_LOG_DIR, one per process kind (web, worker, beat), rotated by size.

Several processes write each file (gunicorn's workers, Celery's pool). The standard
RotatingFileHandler would let each of them rotate on its own, renaming files under the others'
feet; here a rotation happens under an exclusive lock, and a process that finds its file was
rotated by another one reopens the new file before writing. Standard library only: gunicorn's
master loads it before Django.
"""

from __future__ import annotations

import fcntl
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that several processes may share."""

    def __init__(self, filename: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count, delay=True)
        self._lock_path = f"{self.baseFilename}.lock"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with open(self._lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._reopen_if_rotated()
                super().emit(record)   # rotates first when this record would pass max_bytes
        except OSError:
            self.handleError(record)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        # Other processes append to the same file, so this stream's position is stale. Python
        # 3.11 sought to the end before comparing with max_bytes; 3.13 (Debian 13) compares the
        # stream's own position, and the shared file then grew far past its limit.
        if self.stream is not None:
            self.stream.seek(0, os.SEEK_END)
        return bool(super().shouldRollover(record))

    def _reopen_if_rotated(self) -> None:
        if self.stream is None:
            return
        try:
            current = os.stat(self.baseFilename)
        except FileNotFoundError:
            current = None
        opened = os.fstat(self.stream.fileno())
        if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            self.stream.close()
            self.stream = None   # reopened by emit()


def file_handler(log_dir: str, name: str, formatter: str = "plain") -> dict[str, Any]:
    """A dictConfig handler entry for <log_dir>/<name>.log, rotated at PORTAL_LOG_MAX_BYTES
    (default 20 MB) keeping PORTAL_LOG_BACKUPS old files (default 5)."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return {"()": SharedRotatingFileHandler, "filename": str(Path(log_dir) / f"{name}.log"),
            "max_bytes": _env_int("PORTAL_LOG_MAX_BYTES", 20 * 1024 * 1024),
            "backup_count": _env_int("PORTAL_LOG_BACKUPS", 5), "formatter": formatter}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r}: expected a positive whole number")
    return int(raw)
