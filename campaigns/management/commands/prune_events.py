from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from campaigns import eventlog


class Command(BaseCommand):
    help = "Delete event log entries older than the retention period (EVENT_RETENTION_DAYS, default 30)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="Keep this many days instead.")

    def handle(self, *args, days, **options):
        days = settings.EVENT_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError("--days must be 0 or more")
        deleted = eventlog.prune(days)
        self.stdout.write(f"deleted {deleted} events older than {days} days")
