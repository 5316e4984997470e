"""VERP: each delivery goes out with an envelope sender of its own, bounces+<token>@<domain>,
so that a bounce maps to exactly one delivery, whatever its format says or leaves out.

The token is the sender's reference for the message ("d123" a campaign delivery, "o45" an
outbox message) and a signature of it, so that nobody can forge a bounce for a delivery by
guessing its number. References are short and made of letters and digits.
"""

import hmac
import re

from django.utils.crypto import salted_hmac

LOCAL_PREFIX = "bounces+"
_REFERENCE = re.compile(r"[a-z][0-9]{1,18}")
_TOKEN = re.compile(r"([a-z][0-9]{1,18})-([0-9a-f]{16})")
_SALT = "relaydeck.bounces.verp"


def _signature(reference: str) -> str:
    return salted_hmac(_SALT, reference, algorithm="sha256").hexdigest()[:16]


def address(reference: str, domain: str) -> str:
    """The envelope sender for the message `reference` names, bouncing to `domain`."""
    if not _REFERENCE.fullmatch(reference):
        raise ValueError(f"not a bounce reference: {reference!r}")
    return f"{LOCAL_PREFIX}{reference}-{_signature(reference)}@{domain}"


def reference_of(recipient: str) -> str | None:
    """The reference a bounce address carries, if it is one of ours and its signature holds."""
    local, _, _ = recipient.strip().strip("<>").rpartition("@")
    if not local.lower().startswith(LOCAL_PREFIX):
        return None
    token = _TOKEN.fullmatch(local[len(LOCAL_PREFIX) :].lower())
    if token is None or not hmac.compare_digest(token[2], _signature(token[1])):
        return None
    return token[1]
