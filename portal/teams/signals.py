"""Deleting a team (in Django's admin or anywhere else) leaves a RetiredTeam row behind, so the
reconciler removes its Slurm account; making a team of that name again takes the row back."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from portal.teams.models import RetiredTeam, Team


@receiver(post_delete, sender=Team)
def _retire_team(sender, instance: Team, **_) -> None:
    RetiredTeam.objects.get_or_create(name=instance.name)


@receiver(post_save, sender=Team)
def _unretire_team(sender, instance: Team, created: bool, **_) -> None:
    if created:
        RetiredTeam.objects.filter(name=instance.name).delete()
