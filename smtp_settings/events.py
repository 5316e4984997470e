"""What the connection pool reports: one structured event per notable thing it did or heard.

The pool persists nothing and knows nothing of campaigns. Whoever cares (the event log,
campaign counters) connects a receiver to `smtp_event`; `context` carries whatever the caller
attached to its backend (a campaign id, say).
"""

import re
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
