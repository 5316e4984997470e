from django.core.management.base import BaseCommand
from django_q.models import Schedule

SCHEDULES = [
    # name, function, every N minutes
    ("campaigns watchdog", "campaigns.tasks.watchdog", 1),
    ("prune events", "campaigns.tasks.prune_events", 24 * 60),
    ("outbox watchdog", "smtp_settings.tasks.outbox_watchdog", 1),
    ("check bounce mailboxes", "smtp_settings.tasks.check_bounce_mailboxes", 5),
]


class Command(BaseCommand):
    help = "Register Relaydeck's recurring tasks with django-q2 (safe to run again)."

    def handle(self, *args, **options):
        for name, func, minutes in SCHEDULES:
            _, created = Schedule.objects.update_or_create(
                name=name,
                defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
            )
            self.stdout.write(f"{'registered' if created else 'kept'} {name}: every {minutes} min")
