"""Putting messages in the outbox: what every door (relay, API, Django backend) calls.

`enqueue` writes in the caller's transaction and wakes the delivery once it commits: a caller
that rolls back sends nothing, and a message is in the outbox before anyone is told it was
accepted. Bad input raises `Refused` with what is wrong, before anything is written.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from smtp_settings.models import OutboxMessage
from smtp_settings.outbox.reading import decoded
from smtp_settings.validators import HEADER_UNSAFE, unsafe_header_character

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^(message-id|subject)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_BYTES = 64 * 1024  # Message-ID and Subject are looked for in this much of the message


class Refused(ValueError):
    """A message the outbox will not take; `field` names what is wrong, the text says how."""

    def __init__(self, field: str, text: str):
        super().__init__(text)
        self.field = field


@dataclass
class Envelope:
    mail_from: str
    recipients: list[str]
    data: bytes
    source: str
    submitted_by: str = ""
    route: list[int] = field(default_factory=list)
    priority: int = 0


def check_address(address: str, field: str) -> str:
    """An envelope address: no control characters (CR/LF smuggling above all), ASCII or
    UTF-8, at most 254 characters with one "@" (a blank sender is the null sender)."""
    if character := unsafe_header_character(address):
        raise Refused(field, f"{field}: the control character {character} is not allowed in an address")
    try:
        address.encode()
    except UnicodeEncodeError:  # lone surrogates: what became of bytes that were not UTF-8
        raise Refused(field, f"{field}: the address is not valid UTF-8") from None
    if field != "mail_from" or address:
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or len(address) > 254 or " " in address:
            raise Refused(field, f"{field}: {address[:100]!r} is not an email address")
    return address


def check(envelope: Envelope) -> None:
    check_address(envelope.mail_from, "mail_from")
    if not envelope.recipients:
        raise Refused("to", "to: at least one recipient is needed")
    if len(envelope.recipients) > settings.RELAY_MAX_RECIPIENTS:
        raise Refused("to", f"to: at most {settings.RELAY_MAX_RECIPIENTS} recipients per message")
    for address in envelope.recipients:
        check_address(address, "to")
    if not envelope.data:
        raise Refused("data", "the message is empty")
    if len(envelope.data) > settings.RELAY_MAX_MESSAGE_BYTES:
        raise Refused("data", f"the message is larger than {settings.RELAY_MAX_MESSAGE_BYTES:,} bytes")


def _headers(data: bytes) -> tuple[str, str]:
    """(Message-ID, Subject) as written in the message, the subject decoded, for the outbox
    page; without control characters, which the message itself keeps (a database may refuse
    them in text: PostgreSQL a NUL), and 8-bit bytes read as UTF-8. Two fields of a header
    block are found by a pattern: the email package's parser cost more than the rest of
    queueing a message."""
    head = data[:_HEADER_BYTES]
    if end := _HEADER_END.search(head):
        head = head[: end.start()]
    found: dict[bytes, bytes] = {}
    for match in _FIELD.finditer(head):
        found.setdefault(match[1].lower(), match[2])  # the first one counts, as for the parser
    message_id, subject = (found.get(name, b"").decode("utf-8", "replace") for name in (b"message-id", b"subject"))
    subject = " ".join(subject.split())  # folded lines unfolded, line separators too
    if "=?" in subject:  # encoded words, worth the cost of decoding
        subject = " ".join(decoded("Subject", subject).split())
    message_id = " ".join(message_id.split())
    return HEADER_UNSAFE.sub("", message_id)[:998], HEADER_UNSAFE.sub("", subject)[:255]


def build(envelope: Envelope) -> OutboxMessage:
    """An unsaved outbox message for `envelope` (Refused if it is not acceptable)."""
    check(envelope)
    message_id, subject = _headers(envelope.data)
    now = timezone.now()
    return OutboxMessage(
        created_at=now,
        updated_at=now,
        source=envelope.source,
        submitted_by=envelope.submitted_by[:200],
        mail_from=envelope.mail_from,
        recipients=list(envelope.recipients),
        data=envelope.data,
        size=len(envelope.data),
        message_id=message_id,
        subject=subject,
        priority=envelope.priority,
        route=list(envelope.route),
    )


def enqueue(envelopes: list[Envelope]) -> list[OutboxMessage]:
    """Write the messages to the outbox in the caller's transaction (all or none: Refused
    before anything is written) and wake the delivery once it commits."""
    return save([build(envelope) for envelope in envelopes])


def save(messages: list[OutboxMessage], then: Callable[[], None] | None = None) -> list[OutboxMessage]:
    """Write messages made by `build` in the caller's transaction, and once it commits, call
    `then` (default: wake the delivery). A failure there is logged, not raised: the messages
    are committed by then, and a caller told otherwise would hand them over again (the
    delivery's own watchdog finds them all the same)."""
    with transaction.atomic():
        saved = OutboxMessage.objects.bulk_create(messages)
        transaction.on_commit(then or wake, robust=True)
    return saved


def wake() -> None:
    """Make sure a worker delivers the outbox (see delivery.py)."""
    from smtp_settings.outbox.delivery import wake_senders  # the delivery needs the backend; the doors need not

    wake_senders()
