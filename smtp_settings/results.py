"""What became of a message sent through `RotatingEmailBackend`: its `smtp_result`.

The statuses are plain strings, so a result compares and stores like the text it is:
- `SENT`: the server accepted it (or, after a break past the final dot, may have: `ambiguous`);
- `DEFERRED`: not sent this time, worth trying again later (4xx, network, no connection);
- `FAILED`: refused for good (5xx), or a message that cannot go out at all.

A recipient's result says which command the reply that decided it answered (`stage`): only a
reply to its own RCPT TO speaks of the address. A refused MAIL FROM, or DATA, speaks of the
sender or the message, and an ESP's API says nothing in SMTP terms.

Callers that keep their own books (campaigns) read these, never the backend's internals.
"""

import time
from dataclasses import dataclass, field
from typing import Literal

from smtp_settings.events import enhanced_code

SENT, DEFERRED, FAILED = "sent", "deferred", "failed"
Status = Literal["sent", "deferred", "failed"]
AT_RCPT = "rcpt"


@dataclass
class RecipientResult:
    status: Status
    code: int | None = None
    text: str = ""
    # The SMTP command the deciding reply answered: "mail", "rcpt" (AT_RCPT), "data" or "dot";
    # "" when no reply of a server to this recipient's transaction decided it (a network error,
    # a 421, not tried, an ESP's API).
    stage: str = ""


@dataclass
class SmtpResult:
    status: Status
    code: int | None
    text: str
    attempts: int
    ambiguous: bool = False
    server: str = ""
    recipients: dict[str, RecipientResult] = field(default_factory=dict)
    stopped: bool = False  # not tried, or held back before its dot: the batch was stopped (StopBatch, MustWait)
    resume_at: float | None = None  # stopped by a full quota window: when it has room (seconds since the epoch)
    at: float = field(default_factory=time.time)  # when the outcome was known (seconds since the epoch)

    @property
    def enhanced_code(self) -> str:
        return enhanced_code(self.text)
