"""VERP: each delivery goes out with an envelope sender of its own, bounces+<token>@<domain>,
so that a bounce maps to exactly one delivery, whatever its format says or leaves out.

The token is the sender's reference for the message ("d123" a campaign delivery, "o45" an
outbox message) and a signature of it, so that nobody can forge a bounce for a delivery by
guessing its number. A reference is a letter and 1 to 18 digits (`is_reference`); a sender
that names its messages otherwise gets no VERP, and nothing stores such a name. A token is
signed with SECRET_KEY; one signed with a key of SECRET_KEY_FALLBACKS still holds, so that the
addresses of mail sent before a key was rotated still map back.
"""

import hmac
import re

from django.conf import settings
from django.utils.crypto import salted_hmac

LOCAL_PREFIX = "bounces+"
_REFERENCE = re.compile(r"[a-z][0-9]{1,18}")
_TOKEN = re.compile(r"([a-z][0-9]{1,18})-([0-9a-f]{16})")
_SALT = "relaydeck.bounces.verp"


def _signature(reference: str, secret: str | None = None) -> str:
    return salted_hmac(_SALT, reference, secret=secret, algorithm="sha256").hexdigest()[:16]


def is_reference(value) -> bool:
    """Whether `value` can name a sender's message ("d123", "o45")."""
    return isinstance(value, str) and _REFERENCE.fullmatch(value) is not None


def number_of(reference: str, letter: str) -> int | None:
    """The number of a reference to a message of the sender `letter` names ("d" and "d123"
    give 123), else None."""
    return int(reference[1:]) if is_reference(reference) and reference[0] == letter else None


def address(reference: str, domain: str) -> str:
    """The envelope sender for the message `reference` names, bouncing to `domain`."""
    if not is_reference(reference):
        raise ValueError(f"not a bounce reference: {reference!r}")
    return f"{LOCAL_PREFIX}{reference}-{_signature(reference)}@{domain}"


def reference_of(recipient: str) -> str | None:
    """The reference a bounce address carries, if it is one of ours and its signature holds."""
    local, _, _ = recipient.strip().strip("<>").rpartition("@")
    if not local.lower().startswith(LOCAL_PREFIX):
        return None
    token = _TOKEN.fullmatch(local[len(LOCAL_PREFIX) :].lower())
    if token is None:
        return None
    reference, signature = token[1], token[2]
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    if not any(hmac.compare_digest(signature, _signature(reference, secret)) for secret in secrets):
        return None
    return reference
