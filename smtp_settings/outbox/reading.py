"""What the outbox's message page shows of a message's bytes: its headers, decoded, the size
of each part, and its plain text. The HTML part is never rendered, only named."""

from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default

TEXT_SHOWN = 100_000  # characters of the text part, at most


@dataclass
class Reading:
    headers: list[tuple[str, str]] = field(default_factory=list)
    parts: list[tuple[str, int]] = field(default_factory=list)  # (content type, decoded bytes) of each leaf
    text: str | None = None  # the plain text part, cut at TEXT_SHOWN characters
    text_cut: bool = False


def decoded(name: str, value: str) -> str:
    """A header's value as a reader sees it: encoded words decoded, folded lines unfolded."""
    try:
        return str(default.header_fetch_parse(name, value))
    except Exception:  # whatever the email package cannot read is shown as it came
        return value


def read(data: bytes) -> Reading:
    message = BytesParser(policy=default).parsebytes(data)
    reading = Reading(headers=[(name, decoded(name, value)) for name, value in message.raw_items()])
    for part in message.walk():
        if not part.is_multipart():
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
