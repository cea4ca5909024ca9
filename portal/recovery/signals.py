"""Signal receivers of the recovery app (connected in apps.py once the models are loaded)."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from portal.recovery.checkpoints import ensure_team_dirs
from portal.teams.models import Team


@receiver(post_save, sender=Team, dispatch_uid="recovery.team_checkpoint_dir")
def make_team_checkpoint_dir(sender, instance: Team, created: bool, **_kwargs) -> None:
    """A new team's checkpoint level marks its Slurm account as a portal team on the nodes
    (default CHECKPOINT_DIR for its members' sbatch jobs)."""
    if created:
        name = instance.name
        transaction.on_commit(lambda: ensure_team_dirs([name]))
