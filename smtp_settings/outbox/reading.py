"""What a message page shows of a message's bytes: its headers, decoded, the size of each
part, its plain text, its HTML and the links in it. The outbox page never renders the HTML
part, only names it; the sandbox inbox shows it in a sandboxed frame, and lists its links.
A link is read as a browser reads an address: spaces and control characters at its ends, and
tabs and line breaks anywhere in it, dropped.

The bytes are the client's, up to RELAY_MAX_MESSAGE_BYTES of MIME however it is made, so a
page parses only the first PARSED_BYTES of them, shows at most SHOWN headers and parts, and
says the message could not be shown rather than fail on what the email package cannot read
(a RecursionError on parts nested thousands deep, among others)."""

import logging
import re
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from html import unescape
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PARSED_BYTES = 256 * 1024  # of a message, at most, are parsed for its page
SHOWN = 100  # headers, and parts, at most (and Delivered-To lines, on top: they never crowd out the rest)
TEXT_SHOWN = 100_000  # characters of the text part, at most
HTML_SHOWN = 200_000  # characters of the HTML part, at most
LINKS_SHOWN = 100
LINK_CHARS = 2000  # of a link, at most
OPENABLE = ("http", "https", "mailto")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never shown as they came
_ENDS = "".join(map(chr, range(0x21)))  # controls and space: browsers strip them from a link's ends
_TAB_OR_NEWLINE = re.compile(r"[\t\r\n]")  # and drop these anywhere in it
_TO_ENCODE = re.compile(r"[\x00-\x20\x7f]")  # the rest of which a browser percent-encodes
_TEXT_LINK = re.compile(r"https?://[^\s<>\"'()\[\]]+")
_HEADER_LINK = re.compile(r"<([^<>]+)>")
# href="…" in any tag, bounded and never backtracking far: linear in the HTML, however hostile
# (html.parser is quadratic on some unclosed constructs).
_VALUE = f"{{0,{LINK_CHARS}}}"
_HREF = re.compile(rf"""\bhref\s{{0,20}}=\s{{0,20}}(?:"([^"]{_VALUE})|'([^']{_VALUE})|([^\s"'>]{_VALUE}))""", re.I)


@dataclass(frozen=True)
class Link:
    url: str  # as a browser reads it (see `_cleaned`)
    found_in: str  # "List-Unsubscribe", "HTML part" or "text part"

    @property
    def href(self) -> str:
        """The address to link to: its inner spaces and control characters percent-encoded."""
        return _TO_ENCODE.sub(lambda match: f"%{ord(match.group()):02X}", self.url)

    @property
    def openable(self) -> bool:
        """A web or mail address: safe to offer as a link (never javascript: or data:, nor an
        address that cannot be read, such as `http://[x`)."""
        try:
            return urlsplit(self.url).scheme.lower() in OPENABLE
        except ValueError:
            return False


@dataclass
class Reading:
    headers: list[tuple[str, str]] = field(default_factory=list)
    parts: list[tuple[str, int]] = field(default_factory=list)  # (content type, decoded bytes) of each leaf
    text: str | None = None  # the plain text part, cut at TEXT_SHOWN characters
    text_cut: bool = False
    html: str | None = None  # the HTML part, cut at HTML_SHOWN characters
    html_cut: bool = False
    links: list[Link] = field(default_factory=list)
    headers_left_out: int = 0  # headers beyond SHOWN (Delivered-To lines beyond SHOWN, counted apart)
    cut: bool = False  # only the first PARSED_BYTES were read, or SHOWN parts shown
    unreadable: bool = False  # the email package could not read it: nothing else is shown


def decoded(name: str, value: str) -> str:
    """A header's value as a reader sees it: encoded words decoded, folded lines unfolded."""
    try:
        return str(default.header_fetch_parse(name, value))
    except Exception:  # whatever the email package cannot read is shown as it came
        return value


def _cleaned(url: str) -> str:
    return _TAB_OR_NEWLINE.sub("", url.strip(_ENDS))[:LINK_CHARS]


def _links(found: list[tuple[str, str]]) -> list[Link]:
    """The (place, address) found, cleaned, each once, at most LINKS_SHOWN."""
    links = {}
    for found_in, url in found:
        url = _cleaned(url)
        if url and url not in links and len(links) < LINKS_SHOWN:
            links[url] = Link(url, found_in)
    return list(links.values())


def _content(part) -> str:
    try:
        return part.get_content()
    except (LookupError, ValueError):  # an unknown charset, a broken encoding
        return part.get_payload(decode=True).decode("utf-8", "replace")


def read(data: bytes, *, html: bool = False) -> Reading:
    """What a message page shows of `data`: headers, parts and text, and with `html` also the
    HTML part and the links (the sandbox inbox's page shows them; the outbox's does not)."""
    try:
        return _read(data, html)
    except Exception:
        log.warning("A message page could not read a message of %d bytes", len(data), exc_info=True)
        return Reading(unreadable=True)


def _read(data: bytes, with_html: bool) -> Reading:
    message = BytesParser(policy=default).parsebytes(data[:PARSED_BYTES])
    reading = Reading(cut=len(data) > PARSED_BYTES)
    shown = {True: 0, False: 0}  # Delivered-To lines, and the others
    for name, value in message.raw_items():
        envelope = name.lower() == "delivered-to"
        if shown[envelope] == SHOWN:
            reading.headers_left_out += 1
            continue
        shown[envelope] += 1
        reading.headers.append((name, decoded(name, value)))
    for part in message.walk():
        if not part.is_multipart():
            if len(reading.parts) == SHOWN:
                reading.cut = True
                break
            reading.parts.append((part.get_content_type(), len(part.get_payload(decode=True) or b"")))
    body = message.get_body(preferencelist=("plain",))
    if body is not None:
        text = _content(body).replace("\r\n", "\n")  # as on the wire; one line break is enough on a page
        reading.text, reading.text_cut = text[:TEXT_SHOWN], len(text) > TEXT_SHOWN
    if not with_html:
        return reading
    found = [("List-Unsubscribe", url) for url in _HEADER_LINK.findall(str(message.get("List-Unsubscribe", "")))]
    html = message.get_body(preferencelist=("html",))
    if html is not None:
        content = _content(html)
        reading.html, reading.html_cut = content[:HTML_SHOWN], len(content) > HTML_SHOWN
        found += [("HTML part", unescape("".join(match))) for match in _HREF.findall(reading.html)]
    if reading.text is not None:
        found += [("text part", url) for url in _TEXT_LINK.findall(reading.text)]
    reading.links = _links(found)
    return reading
