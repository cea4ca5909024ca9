"""What the cluster offers (partitions, their limits, GPU types), cached for form validation.

Validation runs on every submit; asking Slurm each time would add a round trip to every
request. Partition limits change rarely, so a short cache is safe: 60 s in Redis, shared by
every portal process, and each process keeps its copy for a few seconds more so that a busy
submit path does not fetch and unpickle it on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache

from portal.slurm import gateway
from portal.slurm.gres import gpu_count, gpu_types

# Per cluster: portals (or benches) of two clusters on one Redis must not read each other's.
CACHE_KEY = "cluster-info:v2:{cluster}"
CACHE_SECONDS = 60
LOCAL_SECONDS = 5
_local: dict[str, tuple[float, dict]] = {}   # "copy": (monotonic time fetched, limits)


@dataclass(frozen=True)
class PartitionLimits:
    name: str
    is_default: bool
    max_time_min: int | None
    max_gpus_per_node: int
    gpu_types: tuple[str, ...]
    max_cpus_per_node: int
    max_mem_mb_per_node: int
    total_nodes: int


def _build() -> dict[str, PartitionLimits]:
    nodes = gateway.list_nodes()
    result = {}
    for part in gateway.list_partitions():
        members = [n for n in nodes if part.name in n.partitions]
        result[part.name] = PartitionLimits(
            name=part.name, is_default=part.is_default, max_time_min=part.max_time_min,
            max_gpus_per_node=max((gpu_count(n.gres) for n in members), default=0),
            gpu_types=tuple(sorted(set().union(*(gpu_types(n.gres) for n in members)))),
            max_cpus_per_node=max((n.cpus for n in members), default=0),
            max_mem_mb_per_node=max((n.real_memory_mb for n in members), default=0),
            total_nodes=len(members),
        )
    return result


def partitions() -> dict[str, PartitionLimits]:
    """Partition limits by name; raises SlurmUnavailable if Slurm cannot be asked."""
    now = time.monotonic()
    fetched_at, limits = _local.get("copy", (float("-inf"), {}))
    if now - fetched_at < LOCAL_SECONDS:
        return limits
    key = CACHE_KEY.format(cluster=gateway.cluster_name())
    cached = cache.get(key)
    if cached is None:
        cached = _build()
        cache.set(key, cached, CACHE_SECONDS)
    _local["copy"] = (now, cached)  # one tuple: threads see the old copy or the new one, whole
    return cached


def default_partition(parts: dict[str, PartitionLimits] | None = None) -> str:
    parts = partitions() if parts is None else parts
    return next((p.name for p in parts.values() if p.is_default), next(iter(parts), ""))


def forget() -> None:
    """Drop this process's copy (the shared Redis copy stays): tests that change Slurm use it."""
    _local.clear()
