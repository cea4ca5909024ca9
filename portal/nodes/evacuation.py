"""The node side's one door to the recovery app: move every job off a node now.

The health policy calls `evacuate` for a node with an open fatal finding that runs jobs (every
check, until no job is left there) and for a node it marked DOWN as hung. The recovery app
(portal/recovery/services.py: evacuate_node) records an attempt for and requeues each job on
the node, portal and sbatch jobs alike, excluding the node; it is idempotent.

portal.recovery depends on this app (findings, the policy's evidence), so this app must not
import it: the recovery app registers its handler here when Django starts (RecoveryConfig.ready).
The call stays synchronous, so the policy knows which jobs moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# The recovery app's Cause values for the two reasons this app moves jobs (a test checks them).
FATAL_FINDING = "fatal_finding"
HUNG_NODE = "hung_node"

Handler = Callable[..., list[int]]
_handler: list[Handler] = []


def register(handler: Handler) -> None:
    """Set the function that moves a node's jobs: handler(node_name, *, cause, detail) -> job ids."""
    _handler[:] = [handler]


def evacuate(node_name: str, *, cause: str, detail: str) -> list[int]:
    """Slurm ids of the jobs the recovery app acted on (empty when none, or no app registered)."""
    if not _handler:
        log.error("cannot move the jobs off %s (%s: %s): no recovery app registered", node_name, cause, detail)
        return []
    return _handler[0](node_name, cause=cause, detail=detail)
