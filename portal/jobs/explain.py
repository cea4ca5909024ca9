"""Slurm's state and reason codes in plain words."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from portal.jobs import states

if TYPE_CHECKING:
    from portal.jobs.services import QueueAhead

# Pending reasons (squeue %r) -> what a researcher should understand from them.
REASON_WORDS = {
    "Resources": "Waiting for free GPUs or nodes: the cluster is busy.",
    "Priority": "Other jobs with a higher priority are ahead of it in the queue.",
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


def state_words(state: str, reason: str = "") -> str:
    """The job state in plain words (see states.label)."""
    return states.label(state, reason)


def reason_words(reason: str) -> str:
    """A sentence for a pending reason, or '' when there is nothing to explain."""
    if not reason or reason == "None":
        return ""
    return REASON_WORDS.get(reason, f"Slurm says: {reason}")


def _jobs(count: int, whose: str) -> str:
    return f"{count} job{'s' if count != 1 else ''} {whose}"


def ahead_words(ahead: QueueAhead) -> str:
    """'2 jobs of your own, 1 job of your team and 3 jobs of other teams', or '' when none."""
    parts = [_jobs(n, whose) for n, whose in ((len(ahead.own), "of your own"),
                                              (ahead.team, "of your teammates"), (ahead.others, "of other teams"))
             if n]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def waiting_words(reason: str, ahead: QueueAhead | None) -> str:
    """Why a waiting job waits, from its reason and, when it competes for resources, the jobs ahead."""
    if ahead is None or reason not in {"Priority", "Resources"}:
        return reason_words(reason)
    if not (ahead.own or ahead.team or ahead.others):
        return "It is next in line: it starts as soon as enough GPUs or nodes are free."
    if ahead.others:
        why = ("Jobs of other teams with a higher priority are ahead of it (usually their teams have "
               "used less of their share lately, or they have waited longer).")
    elif ahead.team:
        why = "Jobs of your own team are ahead of it: they were queued earlier or have a higher priority."
    else:
        why = "Only your own jobs are ahead of it: it starts after them, as GPUs and nodes free up."
    return f"{why} Ahead of it: {ahead_words(ahead)}."


def ending(state: str, exit_code: int | None, time_limit_min: int | None = None) -> str:
    """How a job ended, for its page header and its timeline alike: "exit code 3",
    "exit code 137 (killed by SIGKILL)", "timed out after 60 min (killed by SIGTERM)"."""
    killed = f"killed by {_signal_name(exit_code - 128)}" if exit_code is not None and exit_code > 128 else ""
    if state == "TIMEOUT":
        words = f"timed out after {time_limit_min} min" if time_limit_min else "timed out"
        return f"{words} ({killed})" if killed else words
    if exit_code is None:
        return ""
    return f"exit code {exit_code} ({killed})" if killed else f"exit code {exit_code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
