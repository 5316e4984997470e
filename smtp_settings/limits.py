"""Keeping a server's limits: how many connections may be open, how fast messages may go.

The pool asks a `Limits` object and never counts on its own, so the same pool can keep a
limit for one process (`LocalLimits`, here) or for a whole cluster (any class with the
methods of the `Limits` protocol).
"""

import threading
import time
from typing import Protocol


class Limits(Protocol):
    def try_open(self) -> bool:
        """Reserve a connection slot if fewer than `ceiling()` are open."""

    def closed(self) -> None:
        """Give a slot back."""

    def open_count(self) -> int:
        """How many slots are taken now (the pool closes a returned connection while this is
        above the ceiling)."""

    def ceiling(self) -> int:
        """How many connections may be open now (the configured maximum, or less once learned)."""

    def set_ceiling(self, conns: int) -> None:
        """Change the ceiling, within 1 and the configured maximum."""

    def wait_to_send(self) -> None:
        """Block until one more message may go without exceeding the rate limit."""


class RateLimiter:
    """Strict send spacing for one process: `wait_to_send` returns at most `rate` times a second."""

    def __init__(self, rate: float):
        self._interval_s = 1 / rate if rate > 0 else 0.0
        self._next_send_at = 0.0
        self._lock = threading.Lock()

    def wait_to_send(self) -> None:
        if not self._interval_s:
            return
        with self._lock:
            now = time.monotonic()
            send_at = max(now, self._next_send_at)
            self._next_send_at = send_at + self._interval_s
        if send_at > now:
            time.sleep(send_at - now)


class LocalLimits:
    """Limits for one process: a slot counter and a RateLimiter."""

    def __init__(self, max_conns: int, rate_limit: float = 0, ceiling: int | None = None):
        self.max_conns = max_conns
        self._ceiling = min(max_conns, ceiling or max_conns)
        self._open = 0
        self._rate = RateLimiter(rate_limit)
        self._lock = threading.Lock()

    def try_open(self) -> bool:
        with self._lock:
            if self._open >= self._ceiling:
                return False
            self._open += 1
            return True

    def closed(self) -> None:
        with self._lock:
            self._open -= 1

    def ceiling(self) -> int:
        return self._ceiling

    def set_ceiling(self, conns: int) -> None:
        with self._lock:
            self._ceiling = max(1, min(self.max_conns, conns))

    def open_count(self) -> int:
        return self._open

    def wait_to_send(self) -> None:
        self._rate.wait_to_send()
