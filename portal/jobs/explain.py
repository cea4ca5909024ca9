"""Slurm's state and reason codes in plain words."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from portal.jobs import states
from portal.jobs.quota import GpuAsk, team_wait_words

if TYPE_CHECKING:
    from portal.jobs.models import Job
    from portal.jobs.services import QueueAhead

# Reasons portal/quotas/limits.py can put the team's numbers to.
TEAM_REASONS = frozenset({"AssocGrpGRES", "AssocGrpGRESRunMinutes", "Priority", "Resources"})

# Pending reasons (squeue %r) -> what a researcher should understand from them.
REASON_WORDS = {
    "Resources": "Waiting for free GPUs or nodes: the cluster is busy.",
    "Priority": "Other jobs with a higher priority are ahead of it in the queue.",
    "JobHeldUser": "Held by you, your team lead, or the portal after repeated failures (see Runs). "
                   "Release it to let it run.",
    "job_requeued_in_held_state": "Taken off its node and held: the portal stopped restarting it after repeated "
                                  "failures (see Runs). Release it once the cause is fixed.",
    "JobHeldAdmin": "Held by an administrator.",
    "BeginTime": "Waiting for its start time. Requeued jobs wait a moment before they restart.",
    "Dependency": "Waiting for another job it depends on.",
    "DependencyNeverSatisfied": "It depends on a job that failed, so it can never start. Cancel it.",
    # Quotas (portal/teams): limits set on the team's Slurm account (association) or on a QOS.
    # job_reason_words adds the team's numbers where the portal knows them.
    "AssocGrpGRES": "Your team is using all the GPUs its limit allows at once; this job starts when some of "
                    "the team's running jobs finish.",
    "AssocGrpGRESMinutes": "Your team's Slurm account has used all the GPU-minutes it may ever use (a limit "
                           "set in Slurm by an administrator, GrpTRESMins); new GPU jobs wait until it is raised.",
    "AssocGrpGRESRunMinutes": "Your team's running jobs together have reserved as many GPU-minutes (GPUs times "
                              "time left) as its account allows; this job starts as they finish. When the "
                              "team's GPU-hour budget is used up this limit is 0, and GPU jobs start only "
                              "after the budget resets or is raised.",
    "AssocMaxJobsLimit": "You already have as many jobs running as your account allows; this job starts when "
                         "one of them ends.",
    "AssocGrpJobsLimit": "Your team already has as many jobs running as its account allows; this job starts "
                         "when one of them ends.",
    "AssocGrpCpuLimit": "Your team is at its CPU limit.",
    "AssocMaxGRESPerJob": "This job asks for more GPUs than one job of your account may have: it can never "
                          "start. Cancel it and ask for fewer.",
    "QOSGrpGRES": "All jobs of its quality of service (QOS) together hold as many GPUs as that QOS allows; "
                  "it starts when some of them finish.",
    "QOSGrpGRESMinutes": "Its quality of service (QOS) has used all the GPU-minutes it may use.",
    "QOSGrpGRESRunMinutes": "The running jobs of its quality of service (QOS) have reserved all the GPU-minutes "
                            "it allows; it starts as they finish.",
    "QOSMaxGRESPerUser": "You are using as many GPUs as one person may in its quality of service (QOS); it "
                         "starts when some of your jobs finish.",
    "QOSMaxGRESPerJob": "This job asks for more GPUs than one job may in its quality of service (QOS): it can "
                        "never start. Cancel it and ask for fewer.",
    "QOSMaxJobsPerUserLimit": "You already have as many jobs running as its quality of service (QOS) allows "
                              "one person; it starts when one of them ends.",
    "InvalidQOS": "Its quality of service (QOS) is not allowed for your team's account (it may have changed "
                  "since you submitted). The portal moves it when the team's budget state changes.",
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


def job_reason_words(job: Job, ahead: QueueAhead | None = None) -> str:
    """Why a waiting job waits, with its team's numbers for a quota wait ("Your team vision is
    using 32 of its 32 GPUs; ..."), else the plain words of waiting_words. '' for other jobs."""
    if job.state != "PENDING":
        return ""
    words = ""
    if job.reason in TEAM_REASONS and job.gpus_per_node:
        words = team_wait_words(job.reason, job.team, GpuAsk(job.nodes, job.gpus_per_node, job.gpu_type))
    if not words:
        return waiting_words(job.reason, ahead)
    if job.reason in {"Priority", "Resources"} and ahead is not None:
        return f"{words} {waiting_words(job.reason, ahead)}"
    return words


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
