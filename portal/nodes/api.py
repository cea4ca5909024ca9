"""/api/v1/nodes/{name}/health: where node sensors (slurm_plugins) send their reports.

No bearer token here: the HMAC signature is the authentication, and it is checked over the
raw body before the body is even parsed, so an unsigned caller learns nothing but 401.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Literal

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ValidationError

from portal.jobs.access import is_admin
from portal.nodes.models import Node
from portal.nodes.reports import (
    FindingData,
    ReportData,
    ReportRejected,
    check_signature,
    record_health_report,
)
from portal.nodes.services import NodeActionRefused, drain_node, resume_node
from portal.nodes.signing import MasterKeyMissing

log = logging.getLogger(__name__)
router = Router(tags=["nodes"])

NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_FINDINGS = 500


class Error(Schema):
    detail: str


class FindingIn(Schema):
    check: str = Field(..., min_length=1, max_length=64, description='What was checked, e.g. "xid", "ecc"')
    severity: Literal["fatal", "warning", "info"]
    action: Literal["drain", "reboot", "restart_app", "none", "ignore"]
    gpu: int | None = Field(None, ge=0, le=1023)
    xid: int | None = Field(None, ge=0, le=100_000)
    detail: str = Field("", max_length=500)


class ReportIn(Schema):
    node: str = Field(..., max_length=64)
    source: Literal["prolog", "epilog", "healthcheck"]
    sent_at: datetime
    job_id: int | None = Field(None, ge=0, le=2**63 - 1)
    findings: list[FindingIn] = Field(default_factory=list, max_length=MAX_FINDINGS)
    spooled: bool = False


class Accepted(Schema):
    accepted: int = Field(..., description="How many findings the report holds")
    id: int = Field(..., description="The stored report's id")
    duplicate: bool = Field(False, description="True (status 200): this report was already stored; "
                                               "a resend after a lost answer")


def _inline(schema: dict) -> dict:
    """Pydantic's JSON schema with its $defs inlined, for the OpenAPI request body."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _report_data(payload: ReportIn) -> ReportData:
    findings = tuple(FindingData(check=f.check, severity=f.severity, action=f.action, gpu=f.gpu, xid=f.xid,
                                 detail=f.detail) for f in payload.findings)
    return ReportData(node=payload.node, source=payload.source, sent_at=payload.sent_at, job_id=payload.job_id,
                      findings=findings, spooled=payload.spooled)


SIGNATURE_DOC = ("Signed by the node: `X-Health-Timestamp` (unix seconds), `X-Health-Nonce` (random hex) and "
                 "`X-Health-Signature` = hex HMAC-SHA256(node key, timestamp + \"\\n\" + nonce + \"\\n\" + raw body). "
                 "The node key is `manage.py node_key NODE`.")


@router.post("/nodes/{name}/health", auth=None, summary="Receive a node's signed health report",
             description=SIGNATURE_DOC,
             response={200: Accepted, 202: Accepted, 401: Error, 403: Error, 404: Error, 422: Error, 503: Error},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": _inline(ReportIn.model_json_schema())}}}})
def receive_health_report(request: HttpRequest, name: str):
    if not NODE_RE.match(name):
        raise HttpError(404, "Not found.")
    headers, remote = request.headers, request.META.get("REMOTE_ADDR", "")
    try:
        timestamp = check_signature(
            node_name=name, timestamp=headers.get("X-Health-Timestamp", ""), nonce=headers.get("X-Health-Nonce", ""),
            signature=headers.get("X-Health-Signature", ""), body=request.body, remote=remote)
        payload = ReportIn.model_validate_json(request.body)
        recorded = record_health_report(node_name=name, report=_report_data(payload), timestamp=timestamp,
                                        nonce=headers["X-Health-Nonce"], remote=remote)
    except ReportRejected as exc:
        return Status(exc.status, {"detail": exc.reason})
    except ValidationError as exc:
        return Status(422, {"detail": f"The report is not valid: {exc.errors(include_url=False, include_input=False)}"})
    except MasterKeyMissing as exc:
        # Not the node's fault: a 5xx keeps the report in its spool until this is fixed.
        log.error("health reports cannot be checked: master key %s", exc)
        return Status(503, {"detail": f"The portal cannot check reports: health master key {exc}"})
    return Status(200 if recorded.duplicate else 202,
                  {"accepted": len(payload.findings), "id": recorded.report.pk, "duplicate": recorded.duplicate})


# ---------------------------------------------------------------- nodes for people

class NodeOut(Schema):
    name: str
    state: str = Field(..., description="Slurm's base state: IDLE, MIXED, ALLOCATED, DOWN, ...")
    flags: list[str] = Field(..., description="Slurm's state flags, e.g. DRAIN, NOT_RESPONDING")
    reason: str
    gres: str
    gpus: int
    cpus: int
    alloc_cpus: int
    partitions: list[str]
    last_seen: datetime | None
    last_health_at: datetime | None
    last_health_ok: bool | None


class DrainIn(Schema):
    reason: str = Field(..., min_length=1, max_length=250, description="Why; shown in Slurm and the node's history")


class ResumeIn(Schema):
    reason: str = Field("", max_length=250, description="Optional note for the node's history")


def _admin_node(request: HttpRequest, name: str) -> Node:
    if not is_admin(request.auth):
        raise HttpError(403, "Only admins drain and resume nodes.")
    if not NODE_RE.match(name):
        raise HttpError(404, "No such node.")
    return get_object_or_404(Node, name=name)


# Bearer token or session: the API's own authentication (portal/api/main.py), which every
# operation here but the signed health intake inherits.
@router.get("/nodes", response=list[NodeOut], summary="List nodes (everyone may read)")
def list_nodes(request: HttpRequest):
    return Node.objects.order_by("name")


@router.post("/nodes/{name}/drain", response={200: NodeOut, 400: Error, 403: Error, 404: Error, 409: Error, 503: Error},
             summary="Drain a node (admins)")
def drain(request: HttpRequest, name: str, payload: DrainIn):
    """Running jobs finish; nothing new starts. An admin's drain is never resumed automatically."""
    node = _admin_node(request, name)
    try:
        drain_node(node=node, reason=payload.reason, actor=request.auth)
    except NodeActionRefused as exc:
        return Status(400, {"detail": str(exc), "errors": {"reason": [str(exc)]}})  # every 400 names its fields
    return Status(200, node)


@router.post("/nodes/{name}/resume", response={200: NodeOut, 403: Error, 404: Error, 409: Error, 503: Error},
             summary="Return a node to service (admins)")
def resume(request: HttpRequest, name: str, payload: ResumeIn | None = None):
    node = _admin_node(request, name)
    resume_node(node=node, actor=request.auth, reason=payload.reason if payload else "")
    return Status(200, node)
