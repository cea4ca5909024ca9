from django.core.management.base import BaseCommand, CommandError

from portal.slurm.errors import SlurmError
from portal.teams.services import sync_teams_to_slurm


class Command(BaseCommand):
    help = "Make Slurm's accounts and associations match the portal's teams."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    def handle(self, *args, dry_run: bool = False, **options):
        try:
            plan = sync_teams_to_slurm(dry_run=dry_run)
        except SlurmError as exc:
            raise CommandError(f"Slurm: {exc.message}") from None
        verb = "would" if dry_run else "did"
        for account in plan.add_accounts:
            self.stdout.write(f"{verb} add account {account}")
        for user, account in plan.add_associations:
            self.stdout.write(f"{verb} associate {user} with {account}")
        for user, account in plan.coordinators:
            self.stdout.write(f"{verb} ensure {user} coordinates {account}")
        for user, account in plan.remove_associations:
            self.stdout.write(f"{verb} remove {user} from {account}")
        if plan.empty:
            self.stdout.write("Slurm already matches the portal's teams.")
