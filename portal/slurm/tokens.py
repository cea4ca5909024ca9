"""Short-lived Slurm JWTs, minted by the portal with Slurm's own HS256 key.

The portal acts in Slurm *as the user*: Slurm then enforces ownership itself. Minting is
refused for root, the SlurmUser and system accounts, so a portal bug can never turn into
root access to the cluster.
"""

from __future__ import annotations

import pwd
import time
from functools import lru_cache
from pathlib import Path

import jwt

from portal.slurm.errors import SlurmUnavailable, TokenRefused


@lru_cache(maxsize=1)
def _login_defs_uid_range() -> tuple[int, int]:
    """UID_MIN/UID_MAX from /etc/login.defs: below or above is a system account."""
    uid_min, uid_max = 1000, 60000
    try:
        for line in Path("/etc/login.defs").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                uid_min = int(parts[1])
            elif len(parts) == 2 and parts[0] == "UID_MAX" and parts[1].isdigit():
                uid_max = int(parts[1])
    except OSError:
        pass
    return uid_min, uid_max


def check_user_may_act(username: str, *, slurm_user: str) -> None:
    """Raise TokenRefused unless `username` is an ordinary login account."""
    if not username or username == slurm_user:
        raise TokenRefused(f"refusing to act in Slurm as {username!r}")
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        raise TokenRefused(f"{username!r} is not a Unix account on this cluster") from None
    uid_min, uid_max = _login_defs_uid_range()
    if entry.pw_uid == 0 or not uid_min <= entry.pw_uid <= uid_max:
        raise TokenRefused(f"refusing to act in Slurm as system account {username!r}")


@lru_cache(maxsize=4)
def _read_key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SlurmUnavailable(f"cannot read the Slurm JWT key {path}: {exc.strerror}") from None


def mint(username: str, *, key_file: str, lifespan_s: int) -> str:
    """A token Slurm accepts for `username` (claims as `scontrol token` makes them)."""
    now = int(time.time())
    claims = {"sun": username, "iat": now, "exp": now + lifespan_s}
    return jwt.encode(claims, _read_key(key_file), algorithm="HS256")
