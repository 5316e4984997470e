"""Credentials never travel further than the session: what a server says is cut free of them.

A server may echo what it was sent ("535 bad credentials for relay:hunter22"), as typed or
in the base64 that AUTH sent. Replies are stored and shown (test results, the event log,
deliveries), so every reply is cleaned where it is read, while the secrets are at hand.
"""

import base64
import math
import re

REDACTED = b"[redacted]"
# Shorter secrets, in any form, cannot be told apart from ordinary reply text ("ok", "0").
MIN_REDACTED_LEN = 4


def _base64_forms(secret: bytes) -> set[bytes]:
    """`secret` in base64, on its own and as it reads inside any longer base64 text: for each
    of the three alignments, the characters made of the secret's bits alone."""
    forms = {base64.b64encode(secret)}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret)
        forms.add(encoded[math.ceil(offset * 8 / 6) : (offset + len(secret)) * 8 // 6])
    return forms


def secret_pattern(username: str, password: str) -> re.Pattern[bytes] | None:
    """What to cut out of replies: the username and password as typed (as whole words, so a
    username "smtp" leaves "SMTPUTF8" alone), and base64 of each, of AUTH PLAIN's
    "\\0user\\0pass" and of any text that contains them. None when there is nothing to hide."""
    plain = [secret.encode() for secret in (username, password) if len(secret) >= MIN_REDACTED_LEN]
    if not plain:
        return None
    encoded = set().union(*map(_base64_forms, plain))
    if username and password:
        encoded.add(base64.b64encode(f"\0{username}\0{password}".encode()))
    forms = [(secret, True) for secret in plain] + [(form, False) for form in encoded]
    alternatives = [
        rb"(?<![A-Za-z0-9])" + re.escape(form) + rb"(?![A-Za-z0-9])" if whole_word else re.escape(form)
        for form, whole_word in sorted(forms, key=lambda item: len(item[0]), reverse=True)  # longest first
    ]
    return re.compile(b"|".join(alternatives), re.IGNORECASE)


def redact(text: bytes, pattern: re.Pattern[bytes] | None) -> bytes:
    return pattern.sub(REDACTED, text) if pattern is not None else text
