"""Learning a server's unstated limits from its 421s, for the pool that owns a `LimitLearner`.

- Per-connection cap: when sessions keep ending with a 421 to MAIL after a similar number of
  messages (Amazon SES's "maximum number of messages per session"), adopt a cap a little
  below the shortest of them, so the pool rotates before the server closes on it.
- Concurrency ceiling: when the server refuses a new session with a 421 while others of ours
  are open, or says the refusal is about concurrency, lower the ceiling to the sessions it
  accepted (Postfix's concurrency feedback); after a quiet spell with no refusals, allow one
  more again.

Both are shared through the pool's `Limits`: with SharedLimits a ceiling one process learns
holds for every process at once, and only one process in the cluster probes upward per quiet
spell. A cap learned per connection is written to the server row, and every pool adopts it
when its caller next looks the server up (`adopt`): within a batch.

The learner decides and changes the ceiling through the pool's `Limits`; the pool reports
each change as an event, and the caller writes what was learned to the server entry
(`take_learned`).
"""

import re
import threading

from smtp_settings.limits import Limits

CONCURRENCY_REFUSAL = re.compile(r"4\.3\.2|concurrent|too many (smtp )?(connections|sessions)", re.IGNORECASE)
# "454 Throttling failure: Maximum sending rate exceeded" (SES), "450 4.7.1 … rate limited",
# "451 4.7.1 Sending too fast" and the like (not "452 4.2.2 too many messages": a full mailbox).
THROTTLE_REPLY = re.compile(
    r"throttl|sending rate|rate[- ]limit|\brate\b.{0,40}\bexceed|exceed.{0,40}\brate\b|too fast", re.IGNORECASE
)


def is_throttle(code: int | None, text: str) -> bool:
    """A temporary reply that says we send too fast (not one about concurrency)."""
    return code is not None and 400 <= code < 500 and bool(THROTTLE_REPLY.search(text))


class LimitLearner:
    """What one pool has learned about its server, shared by every thread using the pool."""

    LEARN_MARGIN = 0.9  # adopt a cap this fraction of the smallest session length seen
    LEARN_AFTER_SESSIONS = 2  # sessions that must end early, alike, before a cap is adopted

    def __init__(
        self,
        limits: Limits,
        *,
        max_conns: int,
        max_msgs_per_conn: int,
        msgs_per_conn: int | None,
        probe_interval_s: float,
    ):
        self.limits = limits
        self.max_conns = max_conns
        self.max_msgs_per_conn = max_msgs_per_conn
        self.probe_interval_s = probe_interval_s
        self.msgs_per_conn = msgs_per_conn  # the learned per-connection cap, None until learned
        self._unrecorded: dict[str, int] = {}  # learned limits not yet written to the server row
        self._session_lengths: list[int] = []
        self._lock = threading.Lock()

    def adopt(self, msgs_per_conn: int | None) -> None:
        """Another process learned a per-connection cap (it is on the server row now)."""
        with self._lock:
            if msgs_per_conn and (not self.msgs_per_conn or msgs_per_conn < self.msgs_per_conn):
                self.msgs_per_conn = msgs_per_conn

    def session_ended(self, stage: str, sent: int) -> int | None:
        """A 421 at `stage` ended a session after `sent` accepted messages. Returns the
        per-connection cap this teaches, if it is a new, lower one."""
        configured = self.max_msgs_per_conn
        if stage != "MAIL" or sent == 0 or (configured and configured <= sent):
            return None
        with self._lock:
            self._session_lengths.append(sent)
            if len(self._session_lengths) < self.LEARN_AFTER_SESSIONS:
                return None
            cap = max(1, int(min(self._session_lengths) * self.LEARN_MARGIN))
            if self.msgs_per_conn and self.msgs_per_conn <= cap:
                return None
            self.msgs_per_conn = cap
            self._unrecorded["msgs_per_conn"] = cap
        return cap

    def session_lengths(self) -> list[int]:
        """The distinct lengths of the sessions a 421 ended early, shortest first."""
        with self._lock:
            return sorted(set(self._session_lengths))

    def refused(self, accepted: int, reply: str) -> int | None:
        """The server refused a new session with a 421 while `accepted` of ours were open.
        Returns the ceiling it was lowered to, if it was."""
        self.limits.note_refusal()
        if accepted == 0 and not CONCURRENCY_REFUSAL.search(reply):
            return None
        if accepted and accepted < self.limits.ceiling():
            self.limits.set_ceiling(accepted)
            with self._lock:
                self._unrecorded["max_conns"] = accepted
            return accepted
        return None

    def maybe_probe_upward(self) -> int | None:
        """After a quiet spell with no refusals, allow one more connection again. Returns the
        new ceiling, if it was raised."""
        ceiling = self.limits.ceiling()
        if ceiling >= self.max_conns or not self.limits.claim_probe(self.probe_interval_s):
            return None
        self.limits.set_ceiling(ceiling + 1)
        return ceiling + 1

    def take_learned(self) -> dict[str, int]:
        """Learned limits since the last call, for the caller to record in its own thread."""
        with self._lock:
            learned, self._unrecorded = self._unrecorded, {}
        return learned
