"""Keeping a server's limits: how many connections may be open, how fast messages may go,
how many may go in an hour or a day.

The pool asks a `Limits` object and never counts on its own, so the same pool can keep a
server's limits for the whole cluster (`SharedLimits`, in shared_limits.py: the default) or
for one process (`LocalLimits`, here: for a pool without a saved server, and for comparison).
"""

import threading
import time
from typing import Protocol


class MustWait(Exception):
    """Nothing more may go to this server for now: a quota window is full (`until`: when it
    has room again, seconds since the epoch), or the server may not be used (`until` None)."""

    def __init__(self, reason: str, until: float | None):
        super().__init__(reason)
        self.reason, self.until = reason, until


class Limits(Protocol):
    def try_open(self) -> object | None:
        """A slot for one more connection if the ceiling, and this process's fair share of
        it, allow one; None if not."""

    def closed(self, slot: object) -> None:
        """The connection holding `slot` is closed: give the slot back."""

    def keep(self, slot: object, idle: bool = False) -> bool:
        """May the connection holding `slot` stay open after its message? No when the slot
        was lost, or this process holds more than its share (a ceiling was lowered, or
        another process waits); and not if it sits `idle` while another process waits."""

    def share(self) -> int:
        """How many connections this process may use now (as many sending threads are useful)."""

    def open_elsewhere(self) -> int:
        """How many slots other processes hold now."""

    def ceiling(self) -> int:
        """How many connections may be open now (the configured maximum, or less once learned)."""

    def set_ceiling(self, conns: int) -> None:
        """Change the ceiling, within 1 and the configured maximum."""

    def note_refusal(self) -> None:
        """The server refused a connection: no probing upward for a while."""

    def claim_probe(self, quiet_s: float) -> bool:
        """True if `quiet_s` passed without a refusal or probe, for one caller only."""

    def wait_to_send(self, recipients: int = 1) -> None:
        """Block until one more message to `recipients` may go without exceeding a rate;
        raise MustWait if a quota window has no room for it."""

    def throttled(self) -> float | None:
        """The server answered with a throttle reply: lower the rate. Returns the new rate
        (units a second), or None if it was lowered a moment ago already."""

    def retire(self) -> None:
        """The pool is closed: this object is no longer used."""


class RateLimiter:
    """Strict send spacing for one process: `wait_to_send` returns at most `rate` times a second."""

    def __init__(self, rate: float):
        self._interval_s = 1 / rate if rate > 0 else 0.0
        self._next_send_at = 0.0
        self._lock = threading.Lock()

    def wait_to_send(self, units: int = 1) -> None:
        if not self._interval_s:
            return
        with self._lock:
            now = time.monotonic()
            send_at = max(now, self._next_send_at)
            self._next_send_at = send_at + self._interval_s * units
        if send_at > now:
            time.sleep(send_at - now)


class LocalLimits:
    """Limits for one process: a slot counter and a RateLimiter (per second). It keeps no
    quotas and learns no throttling: only right for a process that is alone."""

    def __init__(self, max_conns: int, rate_limit: float = 0, ceiling: int | None = None):
        self.max_conns = max_conns
        self._ceiling = min(max_conns, ceiling or max_conns)
        self._open = 0
        self._rate = RateLimiter(rate_limit)
        self._lock = threading.Lock()
        self._quiet_since = time.monotonic()

    def try_open(self) -> object | None:
        with self._lock:
            if self._open >= self._ceiling:
                return None
            self._open += 1
            return object()

    def closed(self, slot: object) -> None:
        with self._lock:
            self._open -= 1

    def keep(self, slot: object, idle: bool = False) -> bool:
        return self._open <= self._ceiling

    def share(self) -> int:
        return self._ceiling

    def ceiling(self) -> int:
        return self._ceiling

    def set_ceiling(self, conns: int) -> None:
        with self._lock:
            self._ceiling = max(1, min(self.max_conns, conns))

    def open_elsewhere(self) -> int:
        return 0

    def note_refusal(self) -> None:
        with self._lock:
            self._quiet_since = time.monotonic()

    def claim_probe(self, quiet_s: float) -> bool:
        with self._lock:
            if time.monotonic() - self._quiet_since < quiet_s:
                return False
            self._quiet_since = time.monotonic()
            return True

    def wait_to_send(self, recipients: int = 1) -> None:
        self._rate.wait_to_send()

    def throttled(self) -> float | None:
        return None

    def retire(self) -> None:
        pass
