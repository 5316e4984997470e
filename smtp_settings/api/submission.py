"""A message from the API's JSON, checked field by field and built as Django builds every
message (`EmailMultiAlternatives`), so that headers are validated and encoded as everywhere
else. Whatever is wrong raises `queue.Refused` naming the JSON field."""

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives

from smtp_settings.backends import envelope_address
from smtp_settings.mime import message_bytes
from smtp_settings.models import ApiToken, OutboxMessage, SmtpServer
from smtp_settings.outbox.queue import Envelope, Refused, enqueue
from smtp_settings.validators import shown, validate_address, validate_custom_headers, validate_header_text

FIELDS = ("to", "from", "subject", "text", "html", "headers", "server")
MAX_SUBJECT_CHARACTERS = 998
# The outbox's names for what is wrong, as the API's fields ("data": the message as a whole).
_QUEUE_FIELDS = {"mail_from": "from", "to": "to"}


def max_body_bytes() -> int:
    """The largest request body read: twice the largest message, for JSON's escapes."""
    return 2 * settings.RELAY_MAX_MESSAGE_BYTES


def parse(body: bytes) -> dict:
    """The request body as a JSON object; Refused with no field ("") if it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep, a number too long
        raise Refused("", "the body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise Refused("", "the body must be a JSON object")
    return payload


def _text(payload: dict, name: str, *, required: bool = True) -> str:
    value = payload.get(name)
    if value is None:
        if required:
            raise Refused(name, f"{name}: required")
        return ""
    if not isinstance(value, str):
        raise Refused(name, f"{name}: must be a string")
    return value


def _checked(name: str, value, validator):
    try:
        validator(value)
    except ValidationError as error:
        raise Refused(name, f"{name}: {' '.join(error.messages)}") from None
    return value


def _recipients(payload: dict) -> list[str]:
    to = payload.get("to")
    if isinstance(to, str):
        to = [to]
    if to is None or to == []:
        raise Refused("to", "to: at least one recipient is needed")
    if not isinstance(to, list) or not all(isinstance(address, str) for address in to):
        raise Refused("to", "to: must be a string or a list of strings")
    if len(to) > settings.RELAY_MAX_RECIPIENTS:
        raise Refused("to", f"to: at most {settings.RELAY_MAX_RECIPIENTS} recipients per message")
    return [_checked("to", address, validate_address) for address in to]


def _headers(payload: dict) -> dict[str, str]:
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        raise Refused("headers", "headers: must be an object of names and values")
    _checked("headers", [[name, value] for name, value in headers.items()], validate_custom_headers)
    return headers


def _route(payload: dict, token: ApiToken) -> list[int]:
    """The servers the message may go out through: the one named, else the token's (none:
    the relay's default route)."""
    allowed = list(token.servers.all())
    name = payload.get("server")
    if name is None:
        return [server.pk for server in allowed]
    if isinstance(name, bool) or not isinstance(name, int | str):
        raise Refused("server", "server: give a server's name or id")
    found = [server for server in (allowed or SmtpServer.objects.all()) if name in (server.pk, server.name)]
    if not found:
        allowed_text = "one of this token's servers" if allowed else "an SMTP server's name or id"
        raise Refused("server", f"server: {shown(str(name))!r} is not {allowed_text}")
    if not found[0].enabled:
        raise Refused("server", f"server: {found[0].name} is disabled")
    return [found[0].pk]


def build(payload: dict) -> EmailMultiAlternatives:
    """The message `payload` describes (Refused naming the field if it cannot be built)."""
    if unknown := sorted(set(payload) - set(FIELDS)):
        name = shown(unknown[0])  # the client's key, any length
        raise Refused(name, f"{name}: not a field; the fields are {', '.join(FIELDS)}")
    from_email = _checked("from", _text(payload, "from"), validate_address)
    subject = _checked("subject", _text(payload, "subject"), validate_header_text)
    if len(subject) > MAX_SUBJECT_CHARACTERS:
        raise Refused("subject", f"subject: at most {MAX_SUBJECT_CHARACTERS} characters")
    text, html = _text(payload, "text", required=False), _text(payload, "html", required=False)
    if not (text or html):
        raise Refused("text", "text or html: the message needs a body")
    message = EmailMultiAlternatives(subject, text or html, from_email, _recipients(payload), headers=_headers(payload))
    if text and html:
        message.attach_alternative(html, "text/html")
    elif html:
        message.content_subtype = "html"
    return message


def submit(body: bytes, token: ApiToken) -> OutboxMessage:
    """Put the message of a request body in the outbox, for `token`."""
    payload = parse(body)
    message = build(payload)
    route = _route(payload, token)
    try:
        data = message_bytes(message.message())
    except ValueError as error:  # the last guard against header injection (smtp_settings/mime.py)
        raise Refused("headers", f"headers: {error}") from None
    envelope = Envelope(
        mail_from=envelope_address(message.from_email, message.encoding or "utf-8"),
        recipients=[envelope_address(address, message.encoding or "utf-8") for address in message.recipients()],
        data=data,
        source=OutboxMessage.Source.API,
        submitted_by=submitter(token),
        route=route,
    )
    try:
        return enqueue([envelope])[0]
    except Refused as refused:
        largest = "html" if len(payload.get("html") or "") > len(payload.get("text") or "") else "text"
        raise Refused(_QUEUE_FIELDS.get(refused.field, largest), str(refused)) from None


def submitter(token: ApiToken) -> str:
    """Who a message came from, as the outbox keeps it: a token reads only its own messages."""
    return f"api:{token.name}"
