"""Keep the Node table in step with Slurm."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from portal.nodes.models import Node, NodeAction
from portal.slurm import gateway
from portal.slurm.errors import SlurmError
from portal.slurm.types import NodeInfo


@dataclass(frozen=True)
class NodeSyncResult:
    created: int
    updated: int
    unchanged: int


def _fields(info: NodeInfo) -> dict:
    return {
        "state": info.state, "flags": list(info.flags), "reason": info.reason,
        "gres": info.gres, "gpus": info.gpus, "cpus": info.cpus, "alloc_cpus": info.alloc_cpus,
        "real_memory_mb": info.real_memory_mb, "partitions": list(info.partitions),
    }


def sync_nodes() -> NodeSyncResult:
    """Read every node from Slurm and write only the rows that differ."""
    infos = gateway.list_nodes()
    now = timezone.now()
    created = updated = unchanged = 0
    with transaction.atomic():
        existing = {n.name: n for n in Node.objects.select_for_update().filter(
            name__in=[i.name for i in infos])}
        for info in infos:
            fields = _fields(info)
            node = existing.get(info.name)
            if node is None:
                Node.objects.create(name=info.name, last_seen=now, **fields)
                created += 1
                continue
            changed = any(getattr(node, k) != v for k, v in fields.items())
            for key, value in fields.items():
                setattr(node, key, value)
            node.last_seen = now
            node.save(update_fields=[*fields, "last_seen", "updated_at"])
            updated += changed
            unchanged += not changed
    return NodeSyncResult(created=created, updated=updated, unchanged=unchanged)


# ---------------------------------------------------------------- drain and resume

# Drains the portal makes itself carry this prefix in Slurm's reason. Only such drains are
# ever resumed automatically: an admin's manual drain stays until an admin resumes it.
AUTO_PREFIX = "portal:"


class NodeActionRefused(Exception):
    """A drain or resume request that is not allowed or not well formed (message for the user)."""


def _record(node: Node, kind: str, *, actor, automatic: bool, reason: str, ok: bool = True,
            detail: str = "") -> NodeAction:
    return NodeAction.objects.create(node=node, kind=kind, actor=actor, automatic=automatic,
                                     reason=reason[:300], ok=ok, detail=detail[:500])


def _refresh(node: Node) -> None:
    info = gateway.get_node(node.name)
    for key, value in _fields(info).items():
        setattr(node, key, value)
    node.save(update_fields=[*_fields(info), "updated_at"])


def drain_node(*, node: Node, reason: str, actor=None, automatic: bool = False) -> NodeAction:
    """Drain in Slurm (running jobs finish; nothing new starts) and record who and why."""
    reason = " ".join(reason.split())
    if not reason:
        raise NodeActionRefused("A drain needs a reason.")
    if not automatic and reason.lower().startswith(AUTO_PREFIX):
        raise NodeActionRefused(f"Reasons starting with '{AUTO_PREFIX}' are reserved for automatic drains.")
    slurm_reason = f"{AUTO_PREFIX} {reason}" if automatic and not reason.startswith(AUTO_PREFIX) else reason
    try:
        gateway.drain_node(node.name, slurm_reason)
    except SlurmError as exc:
        _record(node, NodeAction.Kind.DRAIN, actor=actor, automatic=automatic, reason=slurm_reason, ok=False,
                detail=exc.message)
        raise
    _refresh(node)
    return _record(node, NodeAction.Kind.DRAIN, actor=actor, automatic=automatic, reason=slurm_reason)


def resume_node(*, node: Node, actor=None, automatic: bool = False, reason: str = "") -> NodeAction:
    """Return a node to service. The policy may only resume its own (prefixed) drains."""
    if automatic and not node.reason.startswith(AUTO_PREFIX):
        raise NodeActionRefused(f"{node.name} was drained by a person ({node.reason!r}); only a person resumes it.")
    try:
        gateway.resume_node(node.name)
    except SlurmError as exc:
        _record(node, NodeAction.Kind.RESUME, actor=actor, automatic=automatic, reason=reason, ok=False,
                detail=exc.message)
        raise
    previous = node.reason
    _refresh(node)
    return _record(node, NodeAction.Kind.RESUME, actor=actor, automatic=automatic, reason=reason,
                   detail=f"was: {previous}" if previous else "")


def refresh_node(node: Node) -> Node:
    """Re-read one node from Slurm into its row. The health policy calls it right before it acts,
    because the table can be a sync behind: an admin may have drained the node meanwhile."""
    _refresh(node)
    return node
