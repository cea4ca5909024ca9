"""Typed readers for settings that come from the environment.

Each fails loudly on a malformed value: a typo in a deployment's env should stop start-up,
not silently fall back to a default that points at the wrong cluster.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit


class ImproperlyConfiguredEnv(RuntimeError):
    pass


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredEnv(f"{name}={value} is below the minimum {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not a number") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not a boolean (use true/false)")


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfiguredEnv(f"{name}={value!r}; expected one of {sorted(choices)}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, *, dev_file: Path, allow_generate: bool) -> str:
    """A secret from NAME, or the file named by NAME_FILE, or (in development) a generated file.

    Secrets never live in the repository; a development checkout gets one generated on
    first use in a git-ignored file so that sessions survive restarts.
    """
    if os.environ.get(name):
        return os.environ[name]
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(f"{name}_FILE={file_name!r}: {exc.strerror}") from None
    if not allow_generate:
        raise ImproperlyConfiguredEnv(f"set {name} or {name}_FILE")
    if not dev_file.exists():
        dev_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dev_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return dev_file.read_text().strip()


def env_optional_secret(name: str, *, default_file: Path) -> str:
    """NAME, else the file NAME_FILE (or `default_file` if it exists), else empty."""
    if os.environ.get(name):
        return os.environ[name]
    path = Path(os.environ.get(f"{name}_FILE") or default_file)
    if os.environ.get(f"{name}_FILE") or path.exists():
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(f"{name}_FILE={str(path)!r}: {exc.strerror}") from None
    return ""


def env_networks(name: str, default: str) -> tuple:
    """A comma-separated list of IP addresses or networks ("127.0.0.1,::1,10.0.0.0/8"); empty: none."""
    raw = os.environ.get(name, default)
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip())
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r}: {exc}") from None


def url_with_password(url: str, password: str) -> str:
    """`url` with `password` filled in, unless it names credentials of its own.

    Sites may write the password into each URL (or use an ACL user: redis://user:pw@host);
    otherwise one password, kept in a file, serves the broker, results and cache URLs alike.
    """
    parts = urlsplit(url)
    if not password or parts.password or parts.username:
        return url
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))
