from django.core.management.base import BaseCommand, CommandError

from portal.quotas.services import sync_teams_to_slurm
from portal.slurm.errors import SlurmError


class Command(BaseCommand):
    help = ("Make Slurm's accounts, associations, coordinators, fair shares and GPU caps match the "
            "portal's teams and policies.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    def handle(self, *args, dry_run: bool = False, **options):
        try:
            plan = sync_teams_to_slurm(dry_run=dry_run)
        except SlurmError as exc:
            raise CommandError(f"Slurm: {exc.message}") from None
        for line in plan.lines(verb="would" if dry_run else "did"):
            self.stdout.write(line)
        if plan.empty:
            self.stdout.write("Slurm already matches the portal's teams.")
        if plan.failed:
            raise CommandError(f"{len(plan.failed)} change(s) refused by Slurm")
