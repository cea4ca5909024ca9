"""A job's checkpoints as the portal sees them: its directory and the newest complete checkpoint.

The scanning itself is slurm_plugins/checkpoint_scan.py, the same code the nodes' TaskProlog
runs, so the job page shows the checkpoint a restart will really resume from.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Iterable

from django.conf import settings

from portal.jobs import checkpoints as job_checkpoints
from portal.jobs.models import Job
from slurm_plugins.checkpoint_scan import Checkpoint, default_dir, latest_checkpoint

log = logging.getLogger(__name__)


def checkpoint_dir_for(job: Job) -> str:
    """The job's own directory; for an adopted sbatch job the convention's default; "" if none.

    An sbatch job may have named its own CHECKPOINT_DIR at submit; Slurm does not tell the
    portal a job's environment, so the default is the portal's best knowledge of it.
    """
    if job.checkpoint_dir:
        return job.checkpoint_dir
    if job.adopted and job.slurm_job_id:
        return default_dir(settings.CHECKPOINT_ROOT, job.team.name, job.owner.username, job.slurm_job_id)
    return ""


def latest_for(job: Job) -> Checkpoint | None:
    """The newest complete checkpoint in the job's directory, or None.

    The portal reads as root: the directory must belong to the job's owner, so a path (or a
    link) leading into another user's tree shows nothing.
    """
    directory = checkpoint_dir_for(job)
    if not directory:
        return None
    try:
        uid = pwd.getpwnam(job.owner.username).pw_uid
    except KeyError:
        return None
    return latest_checkpoint(directory, owner_uid=uid)


def ensure_team_dirs(teams: Iterable[str]) -> None:
    """`<CHECKPOINT_ROOT>/<team>` for each team: the nodes' TaskProlog treats an account as a
    portal team (default CHECKPOINT_DIR for its sbatch jobs) when this root-only directory exists.
    Only a portal running as root can make them; otherwise the site does."""
    if os.geteuid() != 0:
        return
    for team in teams:
        try:
            job_checkpoints.ensure_team_dir(team)
        except job_checkpoints.CheckpointRefused as exc:
            log.warning("no checkpoint directory for team %s: %s", team, exc)
