from django.core.management.base import BaseCommand

from portal.quotas.rollup import fold_changed_jobs, rebuild


class Command(BaseCommand):
    help = ("Make the GPU-hour rollup anew from every finished job (after changing PORTAL_TIME_ZONE, "
            "or to repair it). With --changed, run one ordinary cycle instead (what beat does).")

    def add_arguments(self, parser):
        parser.add_argument("--changed", action="store_true", help="fold only jobs changed since the cursor")

    def handle(self, *args, changed: bool = False, **options):
        if changed:
            self.stdout.write(f"{fold_changed_jobs().as_dict()}")
            return
        folded = rebuild(progress=lambda n: self.stdout.write(f"folded {n:,} jobs"))
        self.stdout.write(f"Rollup rebuilt from {folded:,} finished jobs.")
