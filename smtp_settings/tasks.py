"""django-q2 tasks: thin, taking ids; the work is in outbox/delivery.py and bounces/mailboxes.py."""

from smtp_settings.bounces import mailboxes
from smtp_settings.models import BounceMailbox
from smtp_settings.outbox import delivery


def deliver_outbox(sender_id: int) -> None:
    delivery.deliver(sender_id)


def outbox_watchdog() -> None:
    delivery.watchdog()


def check_bounce_mailboxes() -> None:
    mailboxes.schedule_checks()


def check_bounce_mailbox(mailbox_id: int) -> None:
    mailbox = BounceMailbox.objects.filter(pk=mailbox_id, enabled=True).first()
    if mailbox is not None:  # deleted or disabled since
        mailboxes.check(mailbox)
