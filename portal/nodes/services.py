"""Keep the Node table in step with Slurm."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from portal.nodes.models import Node
from portal.slurm import gateway
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
