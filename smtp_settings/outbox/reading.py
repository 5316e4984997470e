"""What the outbox's message page shows of a message's bytes: its headers, decoded, the size
of each part, and its plain text. The HTML part is never rendered, only named.

The bytes are the client's, up to RELAY_MAX_MESSAGE_BYTES of MIME however it is made, so a
page parses only the first PARSED_BYTES of them, shows at most SHOWN headers and parts, and
says the message could not be shown rather than fail on what the email package cannot read
(a RecursionError on parts nested thousands deep, among others)."""

import logging
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default

log = logging.getLogger(__name__)

PARSED_BYTES = 256 * 1024  # of a message, at most, are parsed for its page
SHOWN = 100  # headers, and parts, at most
TEXT_SHOWN = 100_000  # characters of the text part, at most


@dataclass
class Reading:
    headers: list[tuple[str, str]] = field(default_factory=list)
    parts: list[tuple[str, int]] = field(default_factory=list)  # (content type, decoded bytes) of each leaf
    text: str | None = None  # the plain text part, cut at TEXT_SHOWN characters
    text_cut: bool = False
    cut: bool = False  # only the first PARSED_BYTES were read, or SHOWN headers or parts shown
    unreadable: bool = False  # the email package could not read it: nothing else is shown


def decoded(name: str, value: str) -> str:
    """A header's value as a reader sees it: encoded words decoded, folded lines unfolded."""
    try:
        return str(default.header_fetch_parse(name, value))
    except Exception:  # whatever the email package cannot read is shown as it came
        return value


def read(data: bytes) -> Reading:
    try:
        return _read(data)
    except Exception:
        log.warning("The outbox page could not read a message of %d bytes", len(data), exc_info=True)
        return Reading(unreadable=True)


def _read(data: bytes) -> Reading:
    message = BytesParser(policy=default).parsebytes(data[:PARSED_BYTES])
    headers = list(message.raw_items())
    reading = Reading(headers=[(name, decoded(name, value)) for name, value in headers[:SHOWN]])
    reading.cut = len(data) > PARSED_BYTES or len(headers) > SHOWN
    for part in message.walk():
        if not part.is_multipart():
            if len(reading.parts) == SHOWN:
                reading.cut = True
                break
            reading.parts.append((part.get_content_type(), len(part.get_payload(decode=True) or b"")))
    body = message.get_body(preferencelist=("plain",))
    if body is not None:
        try:
            text = body.get_content()
        except (LookupError, ValueError):  # an unknown charset, a broken encoding
            text = body.get_payload(decode=True).decode("utf-8", "replace")
        text = text.replace("\r\n", "\n")  # as on the wire; one line break is enough on a page
        reading.text, reading.text_cut = text[:TEXT_SHOWN], len(text) > TEXT_SHOWN
    return reading
