"""django-q2 tasks: thin, taking ids; the work is in lists/importing.py, sending/ and eventlog/."""

from django.conf import settings

from campaigns import eventlog
from campaigns.lists import importing
from campaigns.sending import loop
from campaigns.sending import watchdog as campaign_watchdog


def import_csv(import_id: int) -> None:
    importing.run_import(import_id)


def send_campaign(campaign_id: int) -> None:
    loop.send_campaign(campaign_id)


def watchdog() -> None:
    campaign_watchdog.watchdog()


def prune_events() -> None:
    eventlog.prune(settings.EVENT_RETENTION_DAYS)
