from django.core.management.base import BaseCommand, CommandError

from portal.api.services import issue_token, user_by_name


class Command(BaseCommand):
    help = "Print a new API token for USER (shown once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label to tell tokens apart")

    def handle(self, *args, username: str, name: str, **options):
        user = user_by_name(username)
        if user is None:
            raise CommandError(f"no active portal user named {username!r}")
        raw, _ = issue_token(user=user, name=name)
        self.stdout.write(raw)
