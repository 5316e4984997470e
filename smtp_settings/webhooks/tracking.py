"""What an ESP's tracking webhook reports (anymail's `tracking` signal), acted on.

An event names its message by the ESP's id: the `EspMessage` written when the message was sent
gives the sender's reference ("d<id>" a campaign delivery, "o<id>" an outbox message) and the
server. An event about a message not found there (sent from elsewhere, or long ago), or kept
with a reference no sender of ours gives (`verp.is_reference`), still acts on its address.

- bounced: a hard bounce, or a soft one where the ESP says so (`_SAYS_SOFT`); complained: a
  complaint, unless the ESP says it is a soft bounce (a receiving spam filter's refusal,
  which anymail reports as complained for Postmark's SpamNotification: nobody complained).
  `record()` suppresses the address, tells campaigns and logs it, with the ESP's event (JSON)
  as the report.
- unsubscribed: the address is suppressed, and `delivery_reported` tells campaigns;
- delivered: `delivery_reported` tells campaigns, which mark the delivery;
- anything else (queued, deferred, opened, clicked...) is not acted on.

ESPs post an event again until they get a 2xx: a bounce or a complaint is recorded once per
event (`Bounce.event_key`: the ESP's event id, or the event itself where the ESP gives none);
the other events change nothing the second time.
"""

import hashlib
import json
import re

from anymail.signals import EventType, tracking
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError
from django.dispatch import Signal, receiver
from django.utils import timezone

from smtp_settings.bounces import verp
from smtp_settings.bounces.record import record, suppress
from smtp_settings.events import REPLY_CODE, enhanced_code
from smtp_settings.models import Bounce, EspMessage, SmtpServer, Suppression
from smtp_settings.validators import HEADER_UNSAFE, one_line

# Sent with reference ("d<id>", "o<id>", or "" for a message not found), email (may be ""),
# outcome (anymail's event type: EventType.DELIVERED or EventType.UNSUBSCRIBED) and at (when
# the ESP says it happened).
delivery_reported = Signal()

ACTED_ON = {EventType.BOUNCED, EventType.COMPLAINED, EventType.UNSUBSCRIBED, EventType.DELIVERED}
TEXT_LIMIT = 2000
_DIAGNOSTIC_TYPE = re.compile(r"^smtp;\s*", re.IGNORECASE)  # RFC 3464's, which ESPs pass on


def _field(data, *path):
    """data[path[0]][path[1]]..., or None where the ESP's event has no such field."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


# Where an ESP says a bounce is temporary (anymail reports hard and soft ones alike as
# "bounced"), by anymail's name for the ESP. The others report temporary failures as
# "deferred", or do not tell them apart. Postmark's SpamNotification (a spam filter refused
# the message) comes as "complained".
_SAYS_SOFT = {
    "Amazon SES": lambda event: _field(event, "bounce", "bounceType") == "Transient",
    "Brevo": lambda event: _field(event, "event") == "soft_bounce",
    "SendinBlue": lambda event: _field(event, "event") == "soft_bounce",
    "MailerSend": lambda event: _field(event, "data", "type") == "soft_bounced",
    "Mailjet": lambda event: _field(event, "hard_bounce") is False,
    "Mandrill": lambda event: _field(event, "event") == "soft_bounce",
    "Postmark": lambda event: _field(event, "Type") in ("SoftBounce", "SpamNotification"),
    "Resend": lambda event: _field(event, "data", "bounce", "type") == "Transient",
    "SendGrid": lambda event: _field(event, "type") == "blocked",
    # SparkPost's classes: 10 invalid recipient and 30 no such address are hard, 1 says nothing;
    # the others are soft bounces (a full mailbox, a timeout) or blocks (policy, spam).
    "SparkPost": lambda event: _field(event, "msys", "message_event", "bounce_class") not in (None, "1", "10", "30"),
}


def address_of(event) -> str:
    """The event's recipient, normalized, if it is an e-mail address; else ""."""
    if not isinstance(event.recipient, str):
        return ""
    email = Suppression.normalize(event.recipient)
    try:
        validate_email(email)
    except ValidationError:
        return ""
    return email if len(email) <= 254 else ""


def message_id_of(event) -> str:
    """The ESP's id for the event's message, if it could be one we stored; else ""."""
    value = event.message_id
    if not isinstance(value, str) or not value or len(value) > 255 or HEADER_UNSAFE.search(value):
        return ""
    return value


def _message_of(event) -> EspMessage | None:
    """The message the event is about: by the ESP's id, and by recipient where it went to several."""
    message_id = message_id_of(event)
    if not message_id:
        return None
    messages = EspMessage.objects.filter(message_id=message_id).select_related("server").order_by("pk")
    email = address_of(event)
    if email and (message := messages.filter(recipient__iexact=email).first()):
        return message
    found = list(messages[:2])
    return found[0] if len(found) == 1 else None


@receiver(tracking, dispatch_uid="smtp_settings.webhooks.tracking")
def on_tracking(sender, event, esp_name: str, **kwargs) -> None:
    if event.event_type not in ACTED_ON:
        return
    message = _message_of(event)
    email = address_of(event) or (Suppression.normalize(message.recipient) if message else "")
    # Only a name a sender of ours gives ("d12"): rows kept before names were checked may hold others.
    reference = message.reference if message and verp.is_reference(message.reference) else ""
    if event.event_type in (EventType.BOUNCED, EventType.COMPLAINED):
        _record_bounce(event, esp_name, email, reference, message.server if message else None)
        return
    if event.event_type == EventType.UNSUBSCRIBED:
        if not email:
            return
        suppress(email, Suppression.Reason.UNSUBSCRIBE, f"Unsubscribed at {esp_name}.")
    elif not reference:
        return  # delivered: only a known message has anything to mark
    at = event.timestamp if event.timestamp and timezone.is_aware(event.timestamp) else timezone.now()
    delivery_reported.send(sender=EspMessage, reference=reference, email=email, outcome=event.event_type, at=at)


def _record_bounce(event, esp_name: str, email: str, reference: str, server: SmtpServer | None) -> None:
    key = _event_key(event, esp_name, email)
    says_soft = _SAYS_SOFT.get(esp_name)
    if says_soft and says_soft(event.esp_event):
        kind = Bounce.Kind.SOFT
    elif event.event_type == EventType.COMPLAINED:
        kind = Bounce.Kind.COMPLAINT
    else:
        kind = Bounce.Kind.HARD
    response = one_line(event.mta_response)
    diagnostic = _DIAGNOSTIC_TYPE.sub("", response, count=1)
    code = REPLY_CODE.match(diagnostic)
    try:
        record(
            kind,
            Bounce.Source.WEBHOOK,
            email,
            reference=reference,
            server=server,
            code=int(code[0]) if code else None,
            status=enhanced_code(diagnostic[code.end() :].lstrip(" -") if code else diagnostic),
            text=" ".join(filter(None, [one_line(event.description), response]))[:TEXT_LIMIT],
            event_key=key,
            report=json.dumps(event.esp_event, default=str).encode(),
        )
    except IntegrityError:  # the unique event_key: this event was recorded before (or just now, by a twin post)
        if not Bounce.objects.filter(event_key=key).exists():
            raise


def _event_key(event, esp_name: str, email: str) -> str:
    """What tells one event from another: the ESP's id for it, or the event itself where the
    ESP gives none, with the recipient (SES reports several in one event) and the type."""
    identity = event.event_id if event.event_id else json.dumps(event.esp_event, sort_keys=True, default=str)
    return hashlib.sha256(json.dumps([esp_name, str(identity), email, event.event_type]).encode()).hexdigest()
