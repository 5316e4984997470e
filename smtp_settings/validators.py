import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}\.?$")

# RFC 5322 §3.6.8: a field name is printable US-ASCII (33-126) except the colon.
HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
# Headers the sender sets itself; letting a server entry override them would break mail.
RESERVED_HEADERS = {"from", "to", "cc", "bcc", "subject", "message-id", "date", "content-type"}


def validate_host(value: str) -> None:
    """A DNS host name or an IPv4/IPv6 address."""
    if HOST_NAME.match(value):
        return
    try:
        validate_ipv46_address(value)
    except ValidationError:
        raise ValidationError("%(host)r is neither a host name nor an IP address.", params={"host": value}) from None


def validate_custom_headers(value) -> None:
    """A list of [name, value] pairs with RFC 5322 names and single-line values."""
    if not isinstance(value, list):
        raise ValidationError("Custom headers must be a list of name/value pairs.")
    for pair in value:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise ValidationError("Each custom header must be a name/value pair.")
        name, text = pair
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            raise ValidationError(
                "Header name %(name)r is not valid: use printable ASCII without spaces or colons.",
                params={"name": name},
            )
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError(
                "Header %(name)s is set by Relaydeck itself and cannot be overridden.",
                params={"name": name},
            )
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise ValidationError(
                "The value of header %(name)s must be a single line (no CR or LF).",
                params={"name": name},
            )
