"""Bounces seen at send time, for campaigns and the outbox alike: what a server's final reply
to a recipient's RCPT TO says about the address.

- Hard bounce: a 5xx whose enhanced status code (RFC 3463) says the mailbox or address is
  bad, 5.1.x (but 5.1.7 and 5.1.8, which are about the sender's address), or 5.2.1 where the
  text says the mailbox is disabled ("This account has been disabled or discontinued").
- Soft bounce: a message that ends `failed` because a recipient's RCPT 4xx deferrals ran out.
  A 421 (the server closes the session) or a throttle reply is about our sending, not the
  address.
- Other 5xx (policy, content, 5.7.x, a full mailbox 5.2.2), and a 5xx without an enhanced
  code, which does not say what was wrong: failures, not bounces.
- A reply to MAIL FROM or to DATA, whatever it says, is about the sender or the message (a
  refused return path answers "550 5.1.0 Sender address rejected" for every recipient): never
  a bounce. Nor is what an ESP's API answers: its webhooks report the real bounces.

Senders collect the bounces of a batch's judged rows (`found_in`) before writing outcomes,
have `save_outcomes` confirm the writes of those rows, and `record_found` records the bounces
of the rows whose write took effect, in the transaction of those writes: the outcome and its
bounces are written together or not at all. A message sent to one recipient costs nothing more.
"""

import re
from dataclasses import dataclass

from smtp_settings.bounces.record import record
from smtp_settings.events import enhanced_code
from smtp_settings.learning import is_throttle
from smtp_settings.models import Bounce, SmtpServer
from smtp_settings.results import AT_RCPT, DEFERRED, FAILED, SENT

_ABOUT_THE_SENDER = {"5.1.7", "5.1.8"}  # bad sender's mailbox address syntax, bad sender's system address
_DISABLED = re.compile(
    r"\b(?:mailbox|account|user|recipient)\b.{0,60}?\b(?:disabled|discontinued|deactivated)\b"
    r"|\b(?:disabled|discontinued|deactivated)\s+(?:mailbox|account|user|recipient)\b",
    re.IGNORECASE | re.DOTALL,
)


def kind_of(code: int | None, status: str, text: str) -> str | None:
    """What a final reply to a recipient makes of it: a hard bounce, a soft bounce (a 4xx,
    once the deferrals ran out), or None. `status` is the reply's enhanced code ("5.1.1")."""
    if code is None:
        return None
    if 500 <= code < 600:
        return Bounce.Kind.HARD if about_the_address(status, text) else None
    if 400 <= code < 500 and code != 421 and not is_throttle(code, text):
        return Bounce.Kind.SOFT
    return None


def about_the_address(status: str, text: str) -> bool:
    """Whether a permanent failure's enhanced code (and text) says the address itself is bad."""
    if status.startswith("5.1.") and status not in _ABOUT_THE_SENDER:
        return True
    return status == "5.2.1" and bool(_DISABLED.search(text))


@dataclass(frozen=True)
class SendBounce:
    kind: str
    email: str
    code: int | None
    status: str  # the enhanced code
    text: str  # the reply after it


def found_in(judged) -> dict[int, list[SendBounce]]:
    """The bounces in a batch's judged (row, SmtpResult) pairs, by row pk: the recipients
    whose RCPT a 5xx refused, and those whose RCPT was deferred, of rows now failed (their
    retries used up). A deferred row goes again later to its deferred recipients only, which
    say nothing yet; its refused ones are not tried again."""
    found: dict[int, list[SendBounce]] = {}
    for row, result in judged:
        if result.status == SENT and len(result.recipients) < 2:
            continue  # every recipient accepted it
        for email, answer in result.recipients.items():
            if answer.status == SENT or answer.stage != AT_RCPT:
                continue
            if answer.status == DEFERRED and row.status != FAILED:
                continue
            status = enhanced_code(answer.text)
            kind = kind_of(answer.code, status, answer.text)
            if kind is not None:
                text = answer.text[len(status) :].strip()
                found.setdefault(row.pk, []).append(SendBounce(kind, email, answer.code, status, text))
    return found


def record_found(found: dict[int, list[SendBounce]], written: set[int], prefix: str, server: SmtpServer) -> None:
    """Record the bounces of the rows whose outcome was written (`written`), each with its
    reference (`prefix` and the row's pk: "d123"). Meant for `save_outcomes(then=...)`: what
    it raises rolls the outcomes back with the bounces."""
    for pk in sorted(found.keys() & written):
        for bounce in found[pk]:
            record(
                bounce.kind,
                Bounce.Source.SEND,
                bounce.email,
                reference=f"{prefix}{pk}",
                server=server,
                code=bounce.code,
                status=bounce.status,
                text=bounce.text,
            )
