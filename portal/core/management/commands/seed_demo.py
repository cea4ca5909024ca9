"""Create the demo logins and teams, mirror them into Slurm, and print every login."""

from __future__ import annotations

import json
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.slurm.errors import SlurmError
from portal.teams.models import Membership, Team
from portal.teams.services import sync_teams_to_slurm

# (username, is_admin, [(team, role)])
DEMO_USERS = [
    ("admin", True, []),
    ("alice", False, [("vision", Membership.Role.MEMBER)]),
    ("bob", False, [("vision", Membership.Role.MEMBER)]),
    ("carol", False, [("nlp", Membership.Role.LEAD)]),
]
TEAMS = {"vision": "Computer vision", "nlp": "Language models"}


def _passwords() -> dict[str, str]:
    """Random demo passwords, generated once per checkout and kept outside the repo."""
    path = settings.VAR_DIR / "demo-logins.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    for name, _, _ in DEMO_USERS:
        known.setdefault(name, secrets.token_urlsafe(9))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(known, fh, indent=2)
    return known


class Command(BaseCommand):
    help = "Seed the demo users (admin, alice, bob, carol) and teams (vision, nlp)."

    def add_arguments(self, parser):
        parser.add_argument("--skip-slurm", action="store_true",
                            help="only the database; do not touch Slurm accounts")

    def handle(self, *args, skip_slurm: bool = False, **options):
        passwords = _passwords()
        self._seed_db(passwords)
        if not skip_slurm:
            try:
                sync_teams_to_slurm()
            except SlurmError as exc:
                raise CommandError(f"could not mirror teams into Slurm: {exc.message}") from None
        self.stdout.write("Demo logins:")
        for name, is_admin, teams in DEMO_USERS:
            role = "admin" if is_admin else ", ".join(f"{t} {r}" for t, r in teams)
            self.stdout.write(f"  {name:<6} {passwords[name]:<14} ({role})")

    @transaction.atomic
    def _seed_db(self, passwords: dict[str, str]) -> None:
        users = get_user_model()
        teams = {name: Team.objects.get_or_create(name=name, defaults={"description": desc})[0]
                 for name, desc in TEAMS.items()}
        for name, is_admin, memberships in DEMO_USERS:
            user, _ = users.objects.get_or_create(username=name)
            user.is_staff = user.is_superuser = is_admin
            user.set_password(passwords[name])
            user.save()
            for team, role in memberships:
                Membership.objects.update_or_create(user=user, team=teams[team], defaults={"role": role})
