from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.api.services import issue_token, user_by_name


class Command(BaseCommand):
    help = "Print a new API token for USER (shown once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="a label to tell tokens apart")
        parser.add_argument("--days", type=int, default=None,
                            help=f"lifetime in days (default PORTAL_TOKEN_DAYS={settings.PORTAL_TOKEN_DAYS})")

    def handle(self, *args, username: str, name: str, days: int | None, **options):
        user = user_by_name(username)
        if user is None:
            raise CommandError(f"no active portal user named {username!r}")
        try:
            raw, token = issue_token(user=user, name=name, days=days)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(raw)
        self.stderr.write(f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC")
