"""What the connection pool reports: one structured event per notable thing it did or heard.

The pool persists nothing and knows nothing of campaigns. Whoever cares (the event log,
campaign counters) connects a receiver to `smtp_event`; `context` carries whatever the caller
attached to its backend (a campaign id, say).
"""

import os
import random
import re
import threading
import time
from dataclasses import dataclass, field

from django.dispatch import Signal

smtp_event = Signal()  # sent with event=PoolEvent

ENHANCED_CODE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
REPLY_CODE = re.compile(r"[245][0-9][0-9](?![0-9])")  # the SMTP reply code a text starts with (match)


class Kind:
    CONNECT = "connect"  # a session opened: TLS and auth outcome, duration
    CONNECT_FAILED = "connect_failed"  # refused, DNS, TLS or AUTH failure (not a 421)
    ROTATION = "rotation"  # closed on reaching the per-connection message cap
    IDLE_CLOSE = "idle_close"  # closed after idle_timeout
    AGE_CLOSE = "age_close"  # retired after max_conn_age
    CLOSE = "close"  # closed for another reason (detail "reason"): surplus, shutdown, broken off
    SESSION_CLOSED_421 = "421"  # the server ended the session, at `stage`
    RECONNECT = "reconnect"  # a new session replaces one the server closed
    RETRY = "retry"  # a 4xx or network error; the message is tried again
    DEFERRED = "deferred"  # retries used up: the message was not sent, try later
    FAILURE = "failure"  # a 5xx: that recipient failed for good
    TIMEOUT = "timeout"  # the server did not answer within send_timeout
    NETWORK_ERROR = "network_error"  # reset, EOF, TLS error mid-session
    PROTOCOL_ERROR = "protocol_error"  # a reply out of bounds or syntax: the session was closed
    AMBIGUOUS = "ambiguous"  # the link broke after the final dot: sent, maybe
    POOL_WAIT_TIMEOUT = "pool_wait_timeout"  # no free connection within wait_timeout
    LEARNED_LIMIT = "learned_limit"  # the pool adopted a limit the server revealed
    CONCURRENCY_RAISED = "concurrency_raised"  # probing upward after a learned limit
    THROTTLED = "throttled"  # a throttle reply lowered the server's rate for the whole cluster
    THROTTLE_EASED = "throttle_eased"  # a quiet spell: the throttled rate rose a step
    THROTTLE_LIFTED = "throttle_lifted"  # back at the configured rate
    # Reported after sending (smtp_settings/bounces/): detail {"bounce_id": ...}
    BOUNCE = "bounce"  # a hard bounce: the address is suppressed
    SOFT_BOUNCE = "soft_bounce"  # a soft bounce, counted
    COMPLAINT = "complaint"  # marked as spam: the address is suppressed
    DELAY_WARNING = "delay_warning"  # a report that a server is still trying
    REPORT_NOT_UNDERSTOOD = "report_unparsed"  # a report kept, but not understood
    # The suppression list (smtp_settings/suppressions/)
    SUPPRESSED = "suppressed"  # an outbox message was not sent to addresses on the list
    UNSUPPRESSED = "unsuppressed"  # someone took an address off the list; `text` says why


# Kinds that end the SMTP connection they name: each connection has one of these at most.
CONNECTION_ENDS = frozenset(
    {
        Kind.ROTATION,
        Kind.IDLE_CLOSE,
        Kind.AGE_CLOSE,
        Kind.CLOSE,
        Kind.SESSION_CLOSED_421,
        Kind.NETWORK_ERROR,
        Kind.TIMEOUT,
        Kind.PROTOCOL_ERROR,
        Kind.AMBIGUOUS,
    }
)


class ConnectionIds:
    """Numbers for new connections that no other process or host gives out: a random prefix
    for the process, then a count (`prefix << COUNT_BITS | n`), so that the log tells apart the
    connections of every worker. A forked process draws its own prefix."""

    COUNT_BITS = 24

    def __init__(self):
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix, self._n = random.SystemRandom().getrandbits(30), 0

    def next(self) -> int:
        with self._lock:
            self._n += 1
            if self._n >> self.COUNT_BITS:  # the count is used up: a new prefix
                self._prefix, self._n = random.SystemRandom().getrandbits(30), 1
            return self._prefix << self.COUNT_BITS | self._n


connection_ids = ConnectionIds()


def connection_label(connection_id: int | None) -> str:
    """A connection id as people read it: its process' prefix, then its number there ("3fa2c1·12");
    "" for none."""
    if not connection_id:
        return ""
    return f"{connection_id >> ConnectionIds.COUNT_BITS:x}·{connection_id & ((1 << ConnectionIds.COUNT_BITS) - 1)}"


@dataclass(frozen=True)
class PoolEvent:
    kind: str
    server_id: int | None
    server_name: str
    connection_id: int | None = None
    messages_on_connection: int = 0
    stage: str = ""
    code: int | None = None
    text: str = ""
    duration_s: float | None = None
    recipient: str = ""
    message_id: str = ""
    detail: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def enhanced_code(self) -> str:
        return enhanced_code(self.text)


def enhanced_code(text: str) -> str:
    """The RFC 3463 status code a reply text starts with ("4.3.2"), or ""."""
    match = ENHANCED_CODE.match(text)
    return match.group(1) if match else ""
