"""Slurm's gres strings ("gpu:h100:4(S:0-1),gpu:a100:2,shard:8"): the one parser for them.

Standard library only and importing nothing of the portal, so both types.py (NodeInfo.gpus)
and parse.py can use it without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple


class GresItem(NamedTuple):
    name: str       # "gpu", "shard", ...
    type: str       # "h100"; "" when untyped
    count: int


def gres_items(gres: str) -> list[GresItem]:
    """Each `name[:type]:count` item; the socket binding "(S:0-1)" and "gres/" prefixes dropped.
    Items without a count (`(null)`, "N/A") are skipped."""
    items = []
    for raw in (gres or "").split(","):
        parts = raw.split("(")[0].strip().removeprefix("gres/").removeprefix("gres:").split(":")
        if len(parts) < 2 or not parts[-1].isdigit():
            continue
        items.append(GresItem(parts[0], parts[1] if len(parts) >= 3 else "", int(parts[-1])))
    return items


def gpu_count(gres: str) -> int:
    """All GPUs in a gres string, typed or not."""
    return sum(item.count for item in gres_items(gres) if item.name == "gpu")


def gpu_types(gres: str) -> set[str]:
    """The GPU types named in a gres string ("h100", ...)."""
    return {item.type for item in gres_items(gres) if item.name == "gpu" and item.type}


def gpu_type(gres: str) -> str:
    """The first GPU type named, "" when the GPUs are untyped."""
    return next((item.type for item in gres_items(gres) if item.name == "gpu" and item.type), "")
