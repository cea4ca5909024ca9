"""Keep the Node table in step with Slurm."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    """Read every node from Slurm and write only the rows that differ; log each drain and
    resume made outside the portal (by the nodes' health hooks, by Slurm or by hand) once."""
    read_at = timezone.now()
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
                node = Node.objects.create(name=info.name, last_seen=now, **fields)
                log_outside_change(node, was_drained=False, was_reason="", now=now)
                created += 1
                continue
            if node.updated_at > read_at:
                # Written (by a drain, resume or refresh) after our read of Slurm: fresher than it.
                Node.objects.filter(pk=node.pk).update(last_seen=now)
                unchanged += 1
                continue
            was_drained, was_reason = "DRAIN" in node.flags, node.reason
            changed = any(getattr(node, k) != v for k, v in fields.items())
            for key, value in fields.items():
                setattr(node, key, value)
            node.last_seen = now
            node.save(update_fields=[*fields, "last_seen", "updated_at"])
            if changed:
                log_outside_change(node, was_drained=was_drained, was_reason=was_reason, now=now)
            updated += changed
            unchanged += not changed
    return NodeSyncResult(created=created, updated=updated, unchanged=unchanged)


# ---------------------------------------------------------------- drains made outside the portal

# Reasons Slurm itself writes when it drains a node (a failed prolog or epilog, an unkillable
# job): those drains are automatic too, but not the portal's.
SLURM_REASONS = ("Prolog error", "Epilog error", "Kill task failed", "batch job complete failure",
                 "Job credential revoked", "Not responding", "Node unexpectedly rebooted")
# A portal write older than this is from a worker that died half way; the sync logs again.
WRITE_EXPIRES_S = 120


def who_drained(reason: str) -> tuple[str, bool]:
    """(who, automatic) for a drain the portal did not make, from its reason in Slurm."""
    if reason.startswith(AUTO_PREFIX):
        # The sensors' local drain (slurm_plugins/slurmctl.py) uses the same prefix: a prolog or
        # epilog that found a fatal fault, or a health check that could not reach the portal.
        return "health hook on the node (prolog, epilog or health check)", True
    if reason.startswith(SLURM_REASONS):
        return "Slurm itself", True
    return "by hand, outside the portal (scontrol)", False


def _last_logged(node: Node) -> NodeAction | None:
    return (NodeAction.objects.filter(node=node, kind__in=[NodeAction.Kind.DRAIN, NodeAction.Kind.RESUME], ok=True)
            .order_by("-at", "-id").first())


def log_outside_change(node: Node, *, was_drained: bool, was_reason: str, now) -> NodeAction | None:
    """Record a drain (or resume) Slurm shows that the node's log does not hold yet.

    The log itself is the memory: a drain is recorded when the node's newest drain/resume entry
    is not this very drain, so a drain is logged once however many syncs see it, and never
    twice when the portal made it (its own entry is there, or its write is still in flight).
    """
    drained = "DRAIN" in node.flags
    if drained == was_drained and (not drained or node.reason == was_reason):
        return None
    in_flight = node.portal_writing_at and (now - node.portal_writing_at).total_seconds() < WRITE_EXPIRES_S
    if in_flight:
        return None
    last = _last_logged(node)
    last_is_this_drain = last is not None and last.kind == NodeAction.Kind.DRAIN and last.reason == node.reason[:300]
    if drained and not last_is_this_drain:
        who, automatic = who_drained(node.reason)
        return _record(node, NodeAction.Kind.DRAIN, actor=None, automatic=automatic, reason=node.reason,
                       detail=f"drained outside the portal: {who}")
    if not drained and last is not None and last.kind == NodeAction.Kind.DRAIN:
        return _record(node, NodeAction.Kind.RESUME, actor=None, automatic=False, reason="",
                       detail=f"resumed outside the portal (scontrol by hand); was: {was_reason or last.reason}")
    return None


# ---------------------------------------------------------------- drain and resume

# Drains the portal makes itself carry this prefix in Slurm's reason. Only such drains are
# ever resumed automatically: an admin's manual drain stays until an admin resumes it.
AUTO_PREFIX = "portal:"
# The reason the hung-node check (portal/nodes/hung.py) gives the nodes it marks DOWN.
HUNG_PREFIX = f"{AUTO_PREFIX} hung:"


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


@contextmanager
def _writing(node: Node) -> Iterator[None]:
    """Mark the node as being changed by the portal until its log entry is written, so a sync
    that reads Slurm meanwhile does not log the same drain or resume as made outside."""
    Node.objects.filter(pk=node.pk).update(portal_writing_at=timezone.now())
    try:
        yield
    finally:
        Node.objects.filter(pk=node.pk).update(portal_writing_at=None)


def drain_node(*, node: Node, reason: str, actor=None, automatic: bool = False) -> NodeAction:
    """Drain in Slurm (running jobs finish; nothing new starts) and record who and why."""
    reason = " ".join(reason.split())
    if not reason:
        raise NodeActionRefused("A drain needs a reason.")
    if not automatic and reason.lower().startswith(AUTO_PREFIX):
        raise NodeActionRefused(f"Reasons starting with '{AUTO_PREFIX}' are reserved for automatic drains.")
    slurm_reason = f"{AUTO_PREFIX} {reason}" if automatic and not reason.startswith(AUTO_PREFIX) else reason
    with _writing(node):
        try:
            gateway.drain_node(node.name, slurm_reason)
        except SlurmError as exc:
            _record(node, NodeAction.Kind.DRAIN, actor=actor, automatic=automatic, reason=slurm_reason, ok=False,
                    detail=exc.message)
            raise
        _refresh(node)
        # Slurm's own copy of the reason: the sync compares the log with it.
        return _record(node, NodeAction.Kind.DRAIN, actor=actor, automatic=automatic,
                       reason=node.reason or slurm_reason)


def resume_node(*, node: Node, actor=None, automatic: bool = False, reason: str = "") -> NodeAction:
    """Return a node to service. The policy may only resume its own (prefixed) drains."""
    if automatic and not node.reason.startswith(AUTO_PREFIX):
        raise NodeActionRefused(f"{node.name} was drained by a person ({node.reason!r}); only a person resumes it.")
    with _writing(node):
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
