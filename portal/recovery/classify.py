"""Why a run of a job ended, in the recovery worker's terms. Pure: plain data in, a verdict out.

Infrastructure (the node's fault; requeued automatically):
  * NODE_FAIL: Slurm ended or requeued the run because its node failed (went DOWN);
  * a fatal finding (XID 48/64/74/79/95/119/120, a lost GPU, ...) on one of its nodes while it
    ran, whether the run then failed or was still running when the portal moved it;
  * a prolog failure: the run ended the moment it started and its node is out of service;
  * a hung node: the node side marks it DOWN (reason "portal: hung: ..."), Slurm requeues.
Application (the job's own fault; shown with evidence, never requeued automatically):
  * a non-zero exit or a signal on healthy nodes, OUT_OF_MEMORY, TIMEOUT, CANCELLED.

A job that fails the same way (same cause, same XID) on several different nodes is an
application problem whatever each single failure looked like: `crash_loop` says when.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from portal.nodes.services import HUNG_PREFIX
from portal.recovery.models import Cause, FailureClass

XID_RE = re.compile(r"\bxid\s*(\d+)", re.IGNORECASE)
# A run that ended within this many seconds of its start on a node now out of service failed
# in its prolog (sacct shows start == end, state REQUEUED; a prolog that reports to a slow
# portal takes up to its 2.5 s timeout).
PROLOG_MAX_S = 10


@dataclass(frozen=True)
class NodeFault:
    """A fatal finding (one that takes the node out) on a node the run used."""

    node: str
    detail: str          # "check: detail", as the node page shows it
    xid: int | None = None


@dataclass(frozen=True)
class Verdict:
    failure_class: str   # FailureClass value; "" when the run did not fail
    cause: str = ""      # Cause value
    detail: str = ""
    failed_node: str = ""
    exit_code: int | None = None
    signal: int | None = None
    xid: int | None = None

    @property
    def infrastructure(self) -> bool:
        return self.failure_class == FailureClass.INFRASTRUCTURE

    @property
    def signature(self) -> str:
        """What "failing the same way" compares: the cause and, for GPU faults, the XID."""
        return f"{self.cause}:{self.xid or ''}"


SUCCEEDED = Verdict("", detail="finished")
# Final states that are the job's own doing whatever its nodes did.
_APPLICATION_STATES = {
    "OUT_OF_MEMORY": (Cause.OUT_OF_MEMORY, "ran out of memory"),
    "TIMEOUT": (Cause.TIMEOUT, "reached its time limit"),
    "DEADLINE": (Cause.TIMEOUT, "missed its deadline"),
    "CANCELLED": (Cause.CANCELLED, "cancelled (not a failure of the node)"),
    "PREEMPTED": (Cause.CANCELLED, "preempted (not a failure of the node)"),
    "REVOKED": (Cause.CANCELLED, "revoked (not a failure of the node)"),
}


def xid_in(text: str) -> int | None:
    match = XID_RE.search(text or "")
    return int(match.group(1)) if match else None


def infrastructure(cause: str, detail: str, node: str) -> Verdict:
    return Verdict(FailureClass.INFRASTRUCTURE, cause, detail[:500], node, xid=xid_in(detail))


def _fault(cause: str, fault: NodeFault) -> Verdict:
    return Verdict(FailureClass.INFRASTRUCTURE, cause, f"{fault.node}: {fault.detail}"[:500], fault.node,
                   xid=fault.xid if fault.xid is not None else xid_in(fault.detail))


def _application(cause: str, detail: str, exit_code: int | None, signal: int | None) -> Verdict:
    return Verdict(FailureClass.APPLICATION, cause, detail, exit_code=exit_code, signal=signal)


def exit_words(exit_code: int | None, signal: int | None) -> str:
    if signal:
        return f"killed by signal {signal}"
    if exit_code is not None and exit_code > 128:
        return f"exit code {exit_code} (signal {exit_code - 128})"
    return f"exit code {exit_code}" if exit_code is not None else "no exit code"


def ended(state: str, exit_code: int | None, signal: int | None, *, nodes: list[str],
          faults: list[NodeFault]) -> Verdict:
    """A run that reached a final state, given the fatal findings on its nodes while it ran."""
    if state == "COMPLETED":
        return SUCCEEDED
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        node = faults[0].node if faults else (nodes[0] if len(nodes) == 1 else "")
        return infrastructure(Cause.NODE_FAIL, f"Slurm ended the job: node failure ({state})", node)
    if state in _APPLICATION_STATES:
        cause, words = _APPLICATION_STATES[state]
        return _application(cause, words, exit_code, signal)
    if faults:  # FAILED while its GPU was failing: the node's fault, not the script's
        return _fault(Cause.FATAL_FINDING, faults[0])
    return _application(Cause.EXIT_CODE, f"the job's script failed: {exit_words(exit_code, signal)}", exit_code,
                        signal)


def requeued(run_state: str, *, nodes: list[str], elapsed_s: int, out_of_service: dict[str, str],
             faults: list[NodeFault], by_person: bool) -> Verdict:
    """A run that Slurm or a person requeued (the restart count rose without the worker asking).

    `out_of_service` maps the run's nodes that are now drained or down to their reason.
    `run_state` is "" when sacct never showed the run (slurmdbd lagging): then a node of the
    run now out of service is taken for the failure, as Slurm's own NODE_FAIL requeue.
    """
    if not run_state and out_of_service and not by_person:
        run_state = "NODE_FAIL"
    if run_state == "NODE_FAIL":
        down = [n for n in nodes if n in out_of_service]
        node = down[0] if down else (nodes[0] if len(nodes) == 1 else "")
        why = out_of_service.get(node, "")
        # The hung-node check (portal/nodes/hung.py) marks the node DOWN with this prefix;
        # Slurm's own requeue then looks like any node failure.
        cause = Cause.HUNG_NODE if why.startswith(HUNG_PREFIX) else Cause.NODE_FAIL
        return infrastructure(cause, f"node {node or '?'} failed" + (f" ({why})" if why else ""), node)
    if by_person:
        return Verdict("", detail="requeued by a person")
    if elapsed_s <= PROLOG_MAX_S and out_of_service:
        node, why = next(iter(out_of_service.items()))
        return infrastructure(Cause.PROLOG_FAIL, f"{node} failed its start-up check: {why}", node)
    if faults:
        return _fault(Cause.FATAL_FINDING, faults[0])
    return Verdict("", detail="requeued outside the portal")


def crash_loop(verdict: Verdict, earlier: Iterable[tuple[str, str]], min_nodes: int) -> list[str]:
    """The distinct nodes on which the job failed the same way (earlier: (signature, node) of its
    previous infrastructure failures), when they are at least `min_nodes`; else []."""
    nodes = {node for signature, node in earlier if signature == verdict.signature and node}
    if verdict.failed_node:
        nodes.add(verdict.failed_node)
    return sorted(nodes) if len(nodes) >= min_nodes else []


def backoff_s(requeues_so_far: int, schedule: list[int]) -> int:
    """Seconds to wait before the next automatic restart: schedule[n], the last entry after that."""
    if not schedule:
        return 0
    return schedule[min(requeues_so_far, len(schedule) - 1)]
