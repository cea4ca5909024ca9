"""Every job state the portal knows, the sets they fall into, and each one's plain words.

The one place for these: the tracker, the job list's filter, the API's state filter, the
job page and the node pages all read them from here. (Copies had drifted: the API's lacked
CONFIGURING, so `?state=CONFIGURING` was refused.) The finished set itself lives with the
gateway's types, because the gateway must tell an ended job without importing the portal.
"""

from __future__ import annotations

from portal.slurm.types import FINISHED_STATES

# The portal's own states: "" is a row whose submission Slurm has not confirmed yet, and
# SUBMIT_FAILED is final for a submission Slurm never queued.
UNCONFIRMED = ""
SUBMIT_FAILED = "SUBMIT_FAILED"

# Slurm 22.05's final states (job_state_string) and the portal's own.
FINISHED = FINISHED_STATES
ENDED = FINISHED | {SUBMIT_FAILED}
# Every non-final state Slurm 22.05 to 26.05 prints. Listed rather than "not ended" so queries on
# them can use the state index.
SLURM_ACTIVE = frozenset({
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "STAGE_OUT", "RESIZING",
    "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "STOPPED", "SIGNALING", "RESV_DEL_HOLD",
    "POWER_UP_NODE", "RECONFIG_FAIL", "UPDATE_DB", "LAUNCH_FAILED",
    "EXPEDITING",  # 26.05: a job being requeued at once, ahead of others (not in 22.05 or 24.11)
})
ACTIVE = SLURM_ACTIVE | {UNCONFIRMED}
SLURM_STATES = SLURM_ACTIVE | FINISHED
ALL = SLURM_STATES | {UNCONFIRMED, SUBMIT_FAILED}
# States in which the job holds nodes (controls: requeue and cancel).
ON_NODES = frozenset({"RUNNING", "SUSPENDED", "CONFIGURING"})
# Leaving its nodes or going back to the queue: only cancel makes sense.
LEAVING = frozenset({"COMPLETING", "REQUEUED", "STAGE_OUT"})
# Pending reasons that mean someone holds the job (it will not start until released).
# (scontrol requeuehold leaves "job_requeued_in_held_state", Slurm 22.05.)
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin", "launch failed requeued held", "job_requeued_in_held_state"})

# Plain words, each different, so a list or a filter never shows the same word twice.
LABELS = {
    "PENDING": "Waiting", "RUNNING": "Running", "CONFIGURING": "Starting", "COMPLETING": "Finishing",
    "SUSPENDED": "Suspended", "REQUEUED": "Requeued", "REQUEUE_FED": "Requeued (federation)",
    "REQUEUE_HOLD": "Requeued and held", "STOPPED": "Stopped", "SIGNALING": "Being signalled",
    "STAGE_OUT": "Staging out", "RESIZING": "Resizing", "RESV_DEL_HOLD": "Held (reservation deleted)",
    "POWER_UP_NODE": "Starting (powering up a node)", "RECONFIG_FAIL": "Reconfiguration failed",
    "UPDATE_DB": "Being updated", "LAUNCH_FAILED": "Failed to launch", "EXPEDITING": "Requeued, going first",
    "COMPLETED": "Completed", "FAILED": "Failed", "CANCELLED": "Cancelled", "TIMEOUT": "Timed out",
    "NODE_FAIL": "Node failed", "OUT_OF_MEMORY": "Ran out of memory", "PREEMPTED": "Preempted",
    "BOOT_FAIL": "Node failed to boot", "DEADLINE": "Missed its deadline", "REVOKED": "Revoked",
    "SPECIAL_EXIT": "Special exit", SUBMIT_FAILED: "Never queued", UNCONFIRMED: "Submitting",
}
HELD_LABEL = "Held"

# Badge colour per state; any state not listed (FAILED, TIMEOUT, NODE_FAIL, ...) is "bad".
_BADGES = {"": "neutral", "PENDING": "warn", "REQUEUED": "warn", "SUSPENDED": "warn", "RUNNING": "info",
           "CONFIGURING": "info", "COMPLETING": "info", "COMPLETED": "ok", "CANCELLED": "neutral",
           "PREEMPTED": "neutral"}


def is_held(state: str, reason: str) -> bool:
    return state == "PENDING" and reason in HELD_REASONS


def label(state: str, reason: str = "") -> str:
    """A state in plain words; a held job is "Held", not "Waiting"."""
    if is_held(state, reason):
        return HELD_LABEL
    return LABELS.get(state, state.replace("_", " ").capitalize())


def badge(state: str) -> str:
    return _BADGES.get(state, "bad")
