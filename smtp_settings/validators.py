import ipaddress
import re
from email.errors import InvalidHeaderDefect
from email.headerregistry import HeaderRegistry
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email, validate_ipv46_address

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}\.?$")

# RFC 5322 §3.6.8: a field name is printable US-ASCII (33-126) except the colon.
HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
# Headers the sender sets itself; letting a server entry override them would break mail.
RESERVED_HEADERS = {
    *("from", "to", "cc", "bcc", "subject", "message-id", "date"),
    *("mime-version", "content-type", "content-transfer-encoding"),  # a second one: readers disagree on the body
}
SHOWN = 100  # characters of what was given, at most, in an error message

# Python's email package breaks a header's line wherever str.splitlines() would: at CR and LF,
# and at \x0b, \x0c, \x1c-\x1e, \x85, U+2028 and U+2029 too, so that what follows can become
# a header of its own. Those, and the other control characters (C0, DEL, C1), have no place in
# a header; a tab is folding whitespace and may stay.
HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


# Marks and overrides that reorder the text around them on a page (Trojan Source's trick).
BIDI_CONTROLS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def one_line(value, limit: int = 2000) -> str:
    """What a remote party wrote (a report's field, an ESP's message, an imported note), as one
    line to store and show: control characters and line breaks become spaces, runs of spaces
    one, bidirectional controls go, cut at `limit`."""
    if not isinstance(value, str):
        return ""
    text = BIDI_CONTROLS.sub("", HEADER_UNSAFE.sub(" ", value[: limit * 2]))
    return " ".join(text.split())[:limit]


def unsafe_header_character(value: str) -> str | None:
    """The first character of `value` that must not go into a mail header ("U+2028"), if any."""
    match = HEADER_UNSAFE.search(value)
    return f"U+{ord(match.group()):04X}" if match else None


def validate_header_text(value: str) -> None:
    """Text that goes into a mail header (an address, a name, a subject): one line, no control characters."""
    character = unsafe_header_character(value)
    if character:
        raise ValidationError(
            "Remove the line break or control character %(character)s: a mail header is one line of text.",
            params={"character": character},
            code="header_unsafe",
        )


_HEADERS = HeaderRegistry()


def shown(value) -> str:
    """`value` as an error message quotes it: at most SHOWN characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


def address_problem(address: str, max_length: int = 254) -> str | None:
    """Why `address` (trimmed) cannot be stored as a person's address, if it cannot: blank, a
    line break or control character (it goes into a To header), longer than `max_length`, or
    not an email address (compared lower-cased, as stored)."""
    if not address:
        return "no email address"
    if character := unsafe_header_character(address):
        return f"the address contains a line break or control character ({character})"
    if len(address) > max_length:
        return f"'{shown(address)}' is longer than {max_length} characters"
    try:
        validate_email(address.lower())
    except ValidationError:
        return f"'{shown(address)}' is not a valid email address"
    return None


def validate_address(value: str) -> None:
    """An address, or a display name and an address: "News <news@example.test>".

    An ASCII value goes into the header as typed, so it must be what a mail reader parses as
    exactly that one address (a stray quote or backslash would make it another); any other
    value must be one Django can encode."""
    validate_header_text(value)
    try:
        header = _HEADERS("From", value)
        sanitize_address(value, "utf-8")
    except Exception:  # ValueError from Django; the standard library's parser trips on odd input ('.')
        header = None
    one_mailbox = (
        header is not None
        and len(header.groups) == 1
        and header.groups[0].display_name is None
        and len(header.addresses) == 1
        and not any(isinstance(defect, InvalidHeaderDefect) for defect in header.defects)
    )
    if not one_mailbox:
        raise ValidationError("Enter an address, or a name and an address like News <news@example.com>.")
    address = header.addresses[0].addr_spec
    try:
        validate_email(address)
    except ValidationError:
        raise ValidationError(f"“{shown(address)}” is not a valid email address.") from None


def validate_host(value: str) -> None:
    """A DNS host name or an IPv4/IPv6 address."""
    if HOST_NAME.match(value):
        return
    try:
        validate_ipv46_address(value)
    except ValidationError:
        raise ValidationError("%(host)r is neither a host name nor an IP address.", params={"host": value}) from None


def validate_custom_headers(value) -> None:
    """A list of [name, value] pairs with RFC 5322 names and values fit for a header: one
    message for each pair that is not."""
    if not isinstance(value, list):
        raise ValidationError("Custom headers must be a list of name/value pairs.")
    errors = []
    for pair in value:
        try:
            validate_custom_header(pair)
        except ValidationError as error:
            errors.append(error)
    if errors:
        raise ValidationError(errors)


def validate_custom_header(pair) -> None:
    """One [name, value] pair of custom headers. The form marks the input a failure is about,
    by its code: "header_name" or "header_value" (neither: the pair as a whole)."""
    if not (isinstance(pair, list | tuple) and len(pair) == 2):
        raise ValidationError("Each custom header must be a name/value pair.")
    name, text = pair
    if not isinstance(name, str) or not HEADER_NAME.match(name):
        raise ValidationError(
            "Header name %(name)r is not valid: use printable ASCII without spaces or colons.",
            params={"name": shown(name)},
            code="header_name",
        )
    name = shown(name)  # for the messages below: a valid name may still be any length
    if name.lower() in RESERVED_HEADERS:
        raise ValidationError(
            "Header %(name)s is set by Relaydeck itself and cannot be overridden.",
            params={"name": name},
            code="header_name",
        )
    if not isinstance(text, str):
        raise ValidationError("The value of header %(name)s must be text.", params={"name": name}, code="header_value")
    character = unsafe_header_character(text)
    if character:
        raise ValidationError(
            "The value of header %(name)s must be one line of text: remove the line break or "
            "control character %(character)s.",
            params={"name": name, "character": character},
            code="header_value",
        )


def validate_api_url(value: str) -> None:
    """An ESP's API base URL: https, or http to this machine only (a local test server), with
    no credentials, query or fragment in it (the key has a field of its own, kept encrypted)."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValidationError("Put no user name or password in the URL: the API key has a field of its own.")
    if parts.query or parts.fragment:
        raise ValidationError("Enter the API's base URL, without a query or fragment.")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
        raise ValidationError("Use an https:// URL (http:// only to this machine, for a local test server).")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
