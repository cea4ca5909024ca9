"""Signed health reports for the intake tests, made by the sensors' own signing code."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from django.test import Client

from slurm_plugins.report import Envelope

URL = "/api/v1/nodes/{}/health"


@pytest.fixture
def master_key(settings, tmp_path):
    """A private master key for the portal under test."""
    path = tmp_path / "health-master.key"
    path.write_text("4f1d2a9c" * 8 + "\n")
    settings.PORTAL_HEALTH_MASTER_KEY_FILE = str(path)
    return path


def key_for(node: str) -> bytes:
    """The node's key, derived from the portal's master key as ctl and `manage.py node_key` do."""
    from portal.nodes.signing import node_key  # noqa: PLC0415  (reads settings at call time)

    return node_key(node).encode()


def body(node: str = "gpu01", *, findings: list[dict] | None = None, source: str = "healthcheck",
         sent_at: float | None = None, spooled: bool = False, job_id: int | None = None) -> dict:
    sent = datetime.fromtimestamp(sent_at or time.time(), tz=UTC).isoformat()
    return {"node": node, "source": source, "sent_at": sent, "job_id": job_id, "findings": findings or [],
            "spooled": spooled}


def xid48(gpu: int = 1) -> dict:
    return {"check": "xid", "severity": "fatal", "action": "drain", "gpu": gpu, "xid": 48,
            "detail": f"Xid 48 on GPU {gpu}: double-bit ECC error"}


def send(envelope: Envelope, node: str = "gpu01", *, key: bytes | None = None, headers: dict | None = None,
         raw: bytes | None = None):
    """POST a report as a sensor would: the body bytes it signed, its three headers."""
    signed = envelope.headers(key if key is not None else key_for(node))
    return Client().post(URL.format(node), data=raw if raw is not None else envelope.raw(),
                         content_type="application/json", headers={**signed, **(headers or {})})
