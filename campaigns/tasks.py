"""django-q2 tasks: thin, taking ids; the work is in importing.py and sending.py."""

from django.conf import settings

from campaigns import eventlog, importing, sending


def import_csv(import_id: int) -> None:
    importing.run_import(import_id)


def send_campaign(campaign_id: int) -> None:
    sending.send_campaign(campaign_id)


def watchdog() -> None:
    sending.watchdog()


def prune_events() -> None:
    eventlog.prune(settings.EVENT_RETENTION_DAYS)
