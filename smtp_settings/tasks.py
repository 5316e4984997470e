"""django-q2 tasks: thin, taking ids; the work is in outbox/delivery.py."""

from smtp_settings.outbox import delivery


def deliver_outbox(sender_id: int) -> None:
    delivery.deliver(sender_id)


def outbox_watchdog() -> None:
    delivery.watchdog()
