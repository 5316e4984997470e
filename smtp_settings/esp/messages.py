"""The message anymail is given for an ESP entry: a Django message with the entry's custom
headers it lacks, or, for the outbox's bytes (`RawMessage`), a Django message made of them.

An ESP's API takes fields, not MIME: the outbox's message is read back into its From,
subject, text and HTML bodies, attachments (every other leaf part) and headers. The envelope
decides who gets it: its recipients named in To or Cc stay there, the others go as Bcc, and
an address in the headers but not in the envelope gets nothing (as over SMTP). The ESP sets
its own Date, MIME structure and return path.

An ESP takes so many recipients per call (registry.py), so a message is made once and then
addressed for each call (`ApiMessage.for_recipients`): the same content, to some of its
envelope recipients. An ESP sends to whom To and Cc name, so a call's To and Cc name only
its own recipients.
"""

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from email.utils import formataddr, getaddresses

from django.core.mail import EmailMessage, EmailMultiAlternatives

from smtp_settings.raw import RawMessage

# Headers the ESP's API takes as fields of their own, or makes itself.
_FIELDS = {
    *("from", "to", "cc", "bcc", "subject", "reply-to", "date", "sender", "return-path", "received"),
    *("mime-version", "content-type", "content-transfer-encoding", "content-disposition"),
}

# Each address as the message writes it ("Ann <ann@example.test>"), with the envelope
# recipient it stands for, in lower case.
Addressed = list[tuple[str, str]]


@dataclass
class ApiMessage:
    """A message for an ESP's API, made once, and addressed anew for each call."""

    content: EmailMessage  # what anymail is given, less its recipients
    to: Addressed
    cc: Addressed
    bcc: Addressed

    def for_recipients(self, recipients: Iterable[str]) -> EmailMessage:
        """The message for one call: a copy (anymail keeps its status on it) to these
        envelope recipients, and no others."""
        keep = {address.lower() for address in recipients}
        email = copy.copy(self.content)
        email.to, email.cc, email.bcc = (
            [written for written, address in field if address in keep] for field in (self.to, self.cc, self.bcc)
        )
        return email


def api_message(message, custom_headers, envelope_of: Callable[[str], str]) -> ApiMessage:
    """What anymail sends for `message`, never the caller's own object, which keeps its state.
    `envelope_of` gives the envelope address of an address in a Django message's To, Cc or Bcc."""
    if isinstance(message, RawMessage):
        return _from_bytes(message, custom_headers)
    email = copy.copy(message)
    email.extra_headers = _with_custom(message.extra_headers, custom_headers)
    to, cc, bcc = ([(a, envelope_of(a).lower()) for a in field] for field in (message.to, message.cc, message.bcc))
    return ApiMessage(email, to, cc, bcc)


def _with_custom(headers: dict, custom_headers) -> dict:
    present = {name.lower() for name in headers}
    return {**{name: value for name, value in custom_headers if name.lower() not in present}, **headers}


def _from_bytes(raw: RawMessage, custom_headers) -> ApiMessage:
    try:
        return _read(raw, custom_headers)
    except ValueError:
        raise
    except Exception as error:  # whatever the email package trips on in a client's MIME
        raise ValueError(f"the message cannot be read for an ESP's API ({type(error).__name__})") from error


def _read(raw: RawMessage, custom_headers) -> ApiMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(raw.data)
    sender = str(parsed["From"] or "").strip() or raw.mail_from
    if not sender:
        raise ValueError("the message has neither a From header nor an envelope sender")
    envelope = {address.lower(): address for address in raw.recipients}
    to, cc = _named(parsed, "To", envelope), _named(parsed, "Cc", envelope)
    bcc = [(address, key) for key, address in envelope.items()]  # the envelope's recipients the headers do not name
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    headers = {name: str(value) for name, value in parsed.items() if name.lower() not in _FIELDS}
    email = EmailMultiAlternatives(
        subject=str(parsed["Subject"] or ""),
        body=text_part.get_content() if text_part is not None else "",
        from_email=sender,
        reply_to=[formataddr(pair) for pair in getaddresses([str(h) for h in parsed.get_all("Reply-To", [])])],
        headers=_with_custom(headers, custom_headers),
    )
    if html_part is not None:
        email.attach_alternative(html_part.get_content(), "text/html")
    bodies = {id(text_part), id(html_part)}
    for part in parsed.walk():
        if part.is_multipart() or id(part) in bodies:
            continue
        content = part.get_payload(decode=True)
        email.attach(part.get_filename(), content if content is not None else part.as_bytes(), part.get_content_type())
    return ApiMessage(email, to, cc, bcc)


def _named(parsed, header: str, envelope: dict) -> Addressed:
    """The addresses of `header` that are envelope recipients (taken out of `envelope`), as written."""
    named = []
    for name, address in getaddresses([str(value) for value in parsed.get_all(header, [])]):
        if envelope.pop(address.lower(), None) is not None:
            named.append((formataddr((name, address)), address.lower()))
    return named
