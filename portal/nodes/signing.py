"""Node report keys and signatures: the portal's use of slurm_plugins/report.py's node_key and sign.

A node's key is hex HMAC-SHA256(master key, node name): the portal keeps one master key and
derives any node's key on demand, so there is no table of node secrets to leak or sync. Keys
are used as their ASCII hex text. A report's signature is hex HMAC-SHA256(node key,
f"{timestamp}\\n{nonce}\\n" + raw body).
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

from django.conf import settings

from slurm_plugins import report

NONCE_RE = re.compile(r"^[0-9a-f]{16,64}$")
SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")


class MasterKeyMissing(RuntimeError):
    """The portal cannot check any report: its master key file is missing or unreadable."""


def master_key() -> str:
    path = Path(settings.PORTAL_HEALTH_MASTER_KEY_FILE)
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise MasterKeyMissing(f"{path}: {exc.strerror}") from None
    if not key:
        raise MasterKeyMissing(f"{path} is empty")
    return key


def node_key(node: str, master: str | None = None) -> str:
    return report.node_key(master_key() if master is None else master, node)


def signature(key: str, timestamp: str, nonce: str, body: bytes) -> str:
    return report.sign(key.encode(), timestamp, nonce, body)


def signature_ok(node: str, timestamp: str, nonce: str, body: bytes, given: str) -> bool:
    """Constant-time comparison, so the answer time leaks nothing about the right signature."""
    return hmac.compare_digest(signature(node_key(node), timestamp, nonce, body), given)
