from django.core.management.base import BaseCommand, CommandError

from portal.nodes.api import NODE_RE
from portal.nodes.signing import MasterKeyMissing, node_key


class Command(BaseCommand):
    help = ("Print NODE's health report key (HMAC of the master key and the node name). Install it on "
            "the node as the file health.conf's [portal] key_file names, mode 600, owned by root.")

    def add_arguments(self, parser):
        parser.add_argument("node")

    def handle(self, *args, node: str, **options):
        if not NODE_RE.match(node):
            raise CommandError(f"{node!r} is not a valid node name")
        try:
            self.stdout.write(node_key(node))
        except MasterKeyMissing as exc:
            raise CommandError(f"no health master key: {exc} (set PORTAL_HEALTH_MASTER_KEY_FILE)") from None
