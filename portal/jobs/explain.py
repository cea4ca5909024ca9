"""Slurm's state and reason codes in plain words."""

from __future__ import annotations

STATE_WORDS = {
    "PENDING": "Waiting", "RUNNING": "Running", "COMPLETED": "Finished", "FAILED": "Failed",
    "CANCELLED": "Cancelled", "TIMEOUT": "Ran out of time", "NODE_FAIL": "Node failed",
    "OUT_OF_MEMORY": "Ran out of memory", "PREEMPTED": "Preempted", "SUSPENDED": "Suspended",
    "REQUEUED": "Requeued", "COMPLETING": "Finishing", "CONFIGURING": "Starting",
    "BOOT_FAIL": "Node failed to boot", "DEADLINE": "Missed its deadline",
    "SUBMIT_FAILED": "Never queued", "": "Submitting",
}

# Pending reasons (squeue %r) -> what a researcher should understand from them.
REASON_WORDS = {
    "Resources": "Waiting for free GPUs or nodes: the cluster is busy.",
    "Priority": "Other jobs are ahead in the queue (their teams have used less of their share).",
    "JobHeldUser": "Held by you or your team lead. Release it to let it run.",
    "JobHeldAdmin": "Held by an administrator.",
    "BeginTime": "Waiting for its start time. Requeued jobs wait a moment before they restart.",
    "Dependency": "Waiting for another job it depends on.",
    "DependencyNeverSatisfied": "It depends on a job that failed, so it can never start. Cancel it.",
    "AssocGrpGRES": "Your team is at its GPU limit. It starts when your team's other jobs finish.",
    "AssocGrpGRESMinutes": "Your team has used its GPU-hours budget for this period.",
    "AssocGrpGRESRunMinutes": "Your team's running jobs have reserved all of its GPU-hours.",
    "AssocMaxJobsLimit": "You have as many jobs running as your account allows.",
    "AssocGrpCpuLimit": "Your team is at its CPU limit.",
    "QOSMaxGRESPerUser": "You are at your personal GPU limit.",
    "QOSGrpGRES": "The quality-of-service level is at its GPU limit.",
    "ReqNodeNotAvail": "The nodes it needs are down, drained or reserved.",
    "PartitionTimeLimit": "It asks for more time than the partition allows. Lower its time limit.",
    "PartitionNodeLimit": "It asks for more nodes than the partition allows.",
    "PartitionDown": "The partition is down.",
    "PartitionInactive": "The partition is not accepting jobs right now.",
    "NodeDown": "A node it was given is down; Slurm will find another.",
    "InvalidAccount": "Its account is not valid. Check the team.",
    "Reservation": "Waiting for its reservation to start.",
    "launch failed requeued held": "It failed to start and was held. Release it to try again.",
}


def state_words(state: str) -> str:
    return STATE_WORDS.get(state, state.replace("_", " ").capitalize())


def reason_words(reason: str) -> str:
    """A sentence for a pending reason, or '' when there is nothing to explain."""
    if not reason or reason == "None":
        return ""
    return REASON_WORDS.get(reason, f"Slurm says: {reason}")
