"""The message anymail is given for an ESP entry: a Django message with the entry's custom
headers it lacks, or, for the outbox's bytes (`RawMessage`), a Django message made of them.

An ESP's API takes fields, not MIME: the outbox's message is read back into its From,
subject, text and HTML bodies, attachments (every other leaf part) and headers. The envelope
decides who gets it: its recipients named in To or Cc stay there, the others go as Bcc, and
an address in the headers but not in the envelope gets nothing (as over SMTP). The ESP sets
its own Date, MIME structure and return path.
"""

import copy
from email import policy
from email.parser import BytesParser
from email.utils import formataddr, getaddresses

from django.core.mail import EmailMultiAlternatives

from smtp_settings.raw import RawMessage

# Headers the ESP's API takes as fields of their own, or makes itself.
_FIELDS = {
    *("from", "to", "cc", "bcc", "subject", "reply-to", "date", "sender", "return-path", "received"),
    *("mime-version", "content-type", "content-transfer-encoding", "content-disposition"),
}


def api_message(message, custom_headers=()):
    """What anymail sends for `message`: never the caller's own object, which keeps its state."""
    if isinstance(message, RawMessage):
        return _from_bytes(message, custom_headers)
    email = copy.copy(message)
    email.extra_headers = _with_custom(message.extra_headers, custom_headers)
    return email


def _with_custom(headers: dict, custom_headers) -> dict:
    present = {name.lower() for name in headers}
    return {**{name: value for name, value in custom_headers if name.lower() not in present}, **headers}


def _from_bytes(raw: RawMessage, custom_headers) -> EmailMultiAlternatives:
    try:
        return _read(raw, custom_headers)
    except ValueError:
        raise
    except Exception as error:  # whatever the email package trips on in a client's MIME
        raise ValueError(f"the message cannot be read for an ESP's API ({type(error).__name__})") from error


def _read(raw: RawMessage, custom_headers) -> EmailMultiAlternatives:
    parsed = BytesParser(policy=policy.default).parsebytes(raw.data)
    sender = str(parsed["From"] or "").strip() or raw.mail_from
    if not sender:
        raise ValueError("the message has neither a From header nor an envelope sender")
    envelope = {address.lower(): address for address in raw.recipients}
    to, cc = _named(parsed, "To", envelope), _named(parsed, "Cc", envelope)
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    headers = {name: str(value) for name, value in parsed.items() if name.lower() not in _FIELDS}
    email = EmailMultiAlternatives(
        subject=str(parsed["Subject"] or ""),
        body=text_part.get_content() if text_part is not None else "",
        from_email=sender,
        to=to,
        cc=cc,
        bcc=list(envelope.values()),  # the envelope's recipients the headers do not name
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
    return email


def _named(parsed, header: str, envelope: dict) -> list[str]:
    """The addresses of `header` that are envelope recipients (taken out of `envelope`), as written."""
    named = []
    for name, address in getaddresses([str(value) for value in parsed.get_all(header, [])]):
        if envelope.pop(address.lower(), None) is not None:
            named.append(formataddr((name, address)))
    return named
