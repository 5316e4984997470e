"""A message that is already bytes, with its envelope: what RotatingEmailBackend sends as it is.

The outbox keeps the exact bytes an application handed over and the envelope it gave
(`MAIL FROM`, blank for the null sender `<>`, and `RCPT TO`s). `RawMessage` carries them to
the backend, which sends them unchanged but for the server entry's custom headers: each is
prepended as a header line where the message has no header of that name (in any case).
"""

import re
from dataclasses import dataclass, field
from email.header import Header

# A header field's name at the start of a line (not a folded continuation, which starts with
# whitespace), up to its colon: RFC 5322 §2.2.
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")


@dataclass
class RawMessage:
    mail_from: str  # "" is the null sender, MAIL FROM:<>
    recipients: list[str]
    data: bytes
    message_id: str = ""  # as the message says, for events
    event_context: dict = field(default_factory=dict)
    bounce_reference: str = ""  # the sender's name for it, for VERP ("o45"): see backends.py


def header_names(data: bytes) -> set[str]:
    """The names of the message's header fields, lower case."""
    end = _END_OF_HEADERS.search(data)
    head = data[: end.start()] if end else data
    return {name.decode("ascii").lower() for name in _FIELD_NAME.findall(head)}


def with_headers(data: bytes, headers) -> bytes:
    """`data` with each (name, value) of `headers` the message lacks prepended as a header line.
    Values were checked when the server entry was saved (one line, no control characters);
    one that is not ASCII is encoded as RFC 2047 says."""
    if not headers:
        return data
    present = header_names(data)
    lines = [_line(name, value) for name, value in headers if name.lower() not in present]
    return b"".join(lines) + data


def _line(name: str, value: str) -> bytes:
    text = value if value.isascii() else Header(value, "utf-8").encode(linesep="\r\n")
    return f"{name}: {text}\r\n".encode("ascii")
