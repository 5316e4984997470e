"""A message's bytes for the wire, as Django's `message().as_bytes(linesep="\\r\\n")` makes
them, byte for byte, for a fraction of the CPU.

The standard library's compat32 generator runs every header, however short, through
`email.header.Header` to fold it, compiles a fresh regular expression for every multipart
boundary to prove the random boundary absent from the body, and writes each line and line
ending on its own. At a thousand messages a second that is most of the time a sender
spends. Here a header that is printable ASCII words and already fits on a line is written as
is (which is what Header would produce), as is one word too long for it, moved to a line of
its own; the boundary regex is compiled only when the body contains the boundary at all, a
body's line endings are converted in one pass, and a single-part message skips the
generator altogether.

`message_bytes` writes a message Django built; `wire_bytes` goes further for the messages
a campaign sends (text and HTML, no attachments): it writes them from the EmailMessage itself,
without building the email package's objects, which cost as much again.

It is also the last guard against header injection: a header value holding any character at
which the email package would break the line (see `smtp_settings.validators.HEADER_UNSAFE`),
other than the folding of an already encoded value, is refused with a ValueError.
"""

import re
from email.generator import NLCRE, BytesGenerator
from email.policy import Compat32
from email.utils import formatdate, make_msgid
from functools import lru_cache
from io import BytesIO

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.message import RFC5322_EMAIL_LINE_LENGTH_LIMIT, forbid_multi_line_headers, utf8_charset_qp
from django.core.mail.utils import DNS_NAME

_PLAIN = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
# A line break, unless it folds (is followed by a space or tab, as in a value Django encoded).
_LINE_BREAK = re.compile("[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]|\r(?!\n[ \t])|(?<!\r)\n(?![ \t])")


def _fits(name: str, value, limit: int = 78) -> bool:
    """A value of printable ASCII words that fits on a line with its name: folding leaves it
    as it is."""
    return isinstance(value, str) and len(name) + 2 + len(value) <= limit and _PLAIN.fullmatch(value) is not None


class _QuickFold(Compat32):
    def fold_binary(self, name, value):
        if _fits(name, value, self.max_line_length or 78):
            return f"{name}: {value}{self.linesep}".encode("ascii", "surrogateescape")
        if isinstance(value, str) and " " not in value and _PLAIN.fullmatch(value):
            # One word too long for the first line (a List-Unsubscribe URL): Header moves it,
            # unbroken, to a line of its own.
            return f"{name}: {self.linesep} {value}{self.linesep}".encode("ascii", "surrogateescape")
        return super().fold_binary(name, value)

    def _fold(self, name, value, sanitize):
        if isinstance(value, str) and (found := _LINE_BREAK.search(value)):
            raise ValueError(f"the {name} header holds a line break (U+{ord(found.group()[0]):04X})")
        return super()._fold(name, value, sanitize)


def _headers(msg, policy) -> bytes:
    return _header_block(msg.raw_items(), policy)


def _header_block(items, policy) -> bytes:
    return b"".join([policy.fold_binary(name, value) for name, value in items]) + policy.linesep.encode()


def _lines(text: str, linesep: str) -> bytes:
    """`text` with every line ending (CRLF, CR or LF) made `linesep`, as the generator writes a body."""
    converted = NLCRE.sub(linesep, text) if "\r" in text else text.replace("\n", linesep)
    return converted.encode("ascii", "surrogateescape")


class _Generator(BytesGenerator):
    # The originals write (and encode) each header, line and line ending on its own.
    def _write_headers(self, msg):
        self._fp.write(_headers(msg, self.policy))

    def _write_lines(self, lines):
        if lines:
            self._fp.write(_lines(lines, self._NL))

    @classmethod
    def _make_boundary(cls, text=None):
        boundary = super()._make_boundary()  # the same random draw the original makes
        if text is None or f"--{boundary}".encode() not in text:
            return boundary
        return super()._make_boundary(text)  # it does occur: let the original find another


_POLICY = _QuickFold(linesep="\r\n")


def message_bytes(mime) -> bytes:
    """`mime.as_bytes(linesep="\\r\\n")` for a message Django's `EmailMessage.message()` made."""
    if _is_one_part(mime):
        # What the generator does with such a message, without its dispatching: headers, a
        # blank line, the body's lines (BytesGenerator._handle_text, given an 8bit policy).
        return _headers(mime, _POLICY) + _lines(mime._payload, _POLICY.linesep)
    out = BytesIO()
    _Generator(out, mangle_from_=False, policy=_POLICY).flatten(mime)
    return out.getvalue()


def _is_one_part(mime) -> bool:
    """A single part with a text payload, which the generator writes as headers and body and
    nothing else: not multipart, not a message/* wrapper, read through a compat32 policy (so
    its Content-Type reads the same through ours), no headers writer of its own."""
    return (
        isinstance(mime._payload, str)
        and isinstance(mime.policy, Compat32)
        and mime.get_content_maintype() not in ("multipart", "message")
        and not hasattr(mime, "_write_headers")
    )


def wire_bytes(message, custom_headers=()) -> tuple[str, bytes]:
    """A Django message's Message-ID and bytes for the wire, with the server's `custom_headers`
    (name, value pairs) added where the message has no header of that name: what
    `message.message()`, those headers and `message_bytes` make, byte for byte, raising what
    they raise.

    A message of the common shape (see `_written_directly`) is written without building the
    email package's objects: its headers are the very values message() would store, in its
    order, each through Django's own `forbid_multi_line_headers` and our folding, and its
    bodies are encoded as SafeMIMEText encodes them. Anything else is rendered by Django."""
    if _written_directly(message):
        return _direct(message, custom_headers)
    return rendered_by_django(message, custom_headers)


def rendered_by_django(message, custom_headers=()) -> tuple[str, bytes]:
    """What `wire_bytes` gives, made the long way: the email package's objects, then their bytes."""
    mime = message.message()
    for name, value in custom_headers:
        if name not in mime:
            mime[name] = value
    return str(mime["Message-ID"]), message_bytes(mime)


def _written_directly(message) -> bool:
    """Exactly an EmailMessage or EmailMultiAlternatives (a subclass may render otherwise), in
    UTF-8, with a plain or HTML str body, no attachments, at most one alternative that is a
    str of HTML, and no Content-Type of its own among its headers."""
    kind = type(message)
    if kind is EmailMultiAlternatives:
        alternatives = message.alternatives
        if not isinstance(alternatives, list) or len(alternatives) > 1 or message.alternative_subtype != "alternative":
            return False
        if alternatives and not (
            getattr(alternatives[0], "mimetype", None) == "text/html"
            and isinstance(getattr(alternatives[0], "content", None), str)
        ):
            return False
    elif kind is not EmailMessage:
        return False
    extra = message.extra_headers
    encoding = message.encoding or settings.DEFAULT_CHARSET
    return (
        not message.attachments
        and isinstance(message.body, str)
        and message.content_subtype in ("plain", "html")
        and isinstance(encoding, str)  # a Charset("utf-8") equals "utf-8", and Django encodes it otherwise
        and encoding == "utf-8"
        and type(extra) is dict
        and all(isinstance(name, str) and name.lower() != "content-type" for name in extra)
    )


def _direct(message, custom_headers) -> tuple[str, bytes]:
    # In message()'s order, so that the first error is the one it would raise and the random
    # draws (Message-ID, then boundary) come in the same sequence.
    texts = [_text_part(message.body, message.content_subtype)]
    alternatives = message.alternatives if type(message) is EmailMultiAlternatives else ()
    if alternatives:
        html = _text_part(alternatives[0].content, "html")
        texts = [texts[0], html] if message.body else [html]
    headers = _message_headers(message, multipart=bool(alternatives), top=texts[0][0])
    present = {name.lower() for name, _ in headers}
    for name, value in custom_headers:
        if name.lower() not in present:
            present.add(name.lower())
            headers.append(_stored(name, value))
    message_id = next(value for name, value in headers if name.lower() == "message-id")
    if not alternatives:
        return message_id, _header_block(headers, _POLICY) + texts[0][1]
    parts = [_header_block(part_headers, _POLICY) + body for part_headers, body in texts]
    boundary = _Generator._make_boundary(b"\r\n".join(parts))
    delimiter = f"--{boundary}\r\n".encode()
    body = delimiter + (b"\r\n" + delimiter).join(parts) + f"\r\n--{boundary}--\r\n".encode()
    content_type = _multipart_type(len(boundary)).replace(b"0" * len(boundary), boundary.encode())
    return message_id, content_type + _header_block(headers[1:], _POLICY) + body


@lru_cache(maxsize=4)
def _multipart_type(length: int) -> bytes:
    """The folded Content-Type line of a multipart/alternative whose boundary is `length` zeros.
    Folding breaks a line only at whitespace and after ";" or ",", and a boundary holds
    neither ("=", digits and "."): any boundary as long folds the same way."""
    return _POLICY.fold_binary("Content-Type", f'multipart/alternative; boundary="{"0" * length}"')


def _text_part(text: str, subtype: str) -> tuple[list[tuple[str, str]], bytes]:
    """SafeMIMEText(text, subtype, "utf-8"): its headers as stored and its body as written.
    Django quotes a body with a line longer than SMTP allows, else sends it as it is."""
    raw = text.encode("utf-8")
    # Django's own test, run only where a line between CRs and LFs is that long at all (it
    # splits at those and at more characters, so its lines are no longer).
    if max(map(len, raw.splitlines()), default=0) > RFC5322_EMAIL_LINE_LENGTH_LIMIT and any(
        len(line.encode(errors="surrogateescape")) > RFC5322_EMAIL_LINE_LENGTH_LIMIT for line in text.splitlines()
    ):
        encoding, payload = "quoted-printable", utf8_charset_qp.body_encode(raw)
    else:
        encoding, payload = "7bit" if raw.isascii() else "8bit", raw.decode("ascii", "surrogateescape")
    headers = [
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("MIME-Version", "1.0"),
        ("Content-Transfer-Encoding", encoding),
    ]
    return headers, _lines(payload, "\r\n")


_LIST_HEADERS = ("To", "to"), ("Cc", "cc"), ("Reply-To", "reply_to")


def _message_headers(message, multipart: bool, top: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of what message() returns, in its order, as it stores them: its part's own
    (a multipart's Content-Type without the boundary the generator adds), then EmailMessage's."""
    extra = message.extra_headers
    headers = [("Content-Type", "multipart/alternative"), ("MIME-Version", "1.0")] if multipart else list(top)
    subject = str(message.subject)
    # Django runs every ASCII subject through Header, which leaves one that fits on a line as it is.
    headers.append(("Subject", subject) if _fits("Subject", subject) else _stored("Subject", subject))
    headers.append(_stored("From", extra.get("From", message.from_email)))
    for name, attribute in _LIST_HEADERS:
        if name in extra:
            headers.append(_stored(name, extra[name]))
        elif values := getattr(message, attribute):
            headers.append(_stored(name, ", ".join(str(value) for value in values)))
    names = {name.lower() for name in extra}
    if "date" not in names:
        headers.append(("Date", formatdate(localtime=settings.EMAIL_USE_LOCALTIME)))
    if "message-id" not in names:
        headers.append(("Message-ID", make_msgid(domain=DNS_NAME)))
    headers += [_stored(name, value) for name, value in extra.items() if name.lower() not in _SET_ABOVE]
    return headers


_SET_ABOVE = {"from", "to", "cc", "reply-to"}


def _stored(name: str, value) -> tuple[str, str]:
    return forbid_multi_line_headers(name, value, "utf-8")
