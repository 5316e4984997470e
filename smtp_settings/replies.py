"""Reading SMTP replies from a server that may be hostile: bounded in time, size and syntax.

smtplib's `getreply()` gathers continuation lines without end and applies its timeout to each
read, so a server sending `220-AAAA…` forever, or one byte a second, holds a process as long
as it likes. `BoundedSMTP` (and `BoundedSMTPSSL`) read every reply within one deadline and
these bounds, and every session, the pool's and "test connection"'s, is one of them:

- a whole reply arrives within `reply_timeout_s` (and within `ends_at`, an overall deadline
  such as the probe's), however slowly its bytes come (give or take TIMEOUT_SLACK_S);
- it has at most MAX_REPLY_LINES lines and MAX_REPLY_BYTES bytes;
- its code is three digits from 200 to 599, the same on every line (RFC 5321 §4.2).

A reply that breaks a bound or the syntax raises `ProtocolError`; a late one raises
`SMTPServerDisconnected` caused by a TimeoutError. Either way the session is closed, never
reused. Replies are returned with the session's credentials redacted (`redaction.py`).
"""

import io
import math
import smtplib
import socket
import time
from collections.abc import Callable

from smtp_settings.redaction import redact, secret_pattern

MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 64 * 1024  # RFC 5321 allows 512 per line; EHLO replies are the longest real ones
TIMEOUT_SLACK_S = 0.01  # how much longer than its deadline a read or write may wait (see _wait_at_most)
_LAST_LINE_SEPARATORS = (b" ", b"\r", b"\n", b"")


class ProtocolError(smtplib.SMTPServerDisconnected):
    """The server's reply broke RFC 5321: too long, too many lines, or a code no reply may
    carry. Nothing it says can be trusted, so the session is closed (it is a disconnection
    as far as any caller is concerned) and the attempt counts as a temporary failure."""


def read_reply(
    readline: Callable[[int], bytes], max_lines: int = MAX_REPLY_LINES, max_bytes: int = MAX_REPLY_BYTES
) -> tuple[int, bytes]:
    """One reply: its code (200-599) and its lines' text joined by newlines, as smtplib gives.

    `readline(limit)` returns the next line, at most `limit` bytes, or b"" at end of stream.
    Raises ProtocolError for a reply out of bounds or syntax, SMTPServerDisconnected at EOF."""
    texts, size, code = [], 0, None
    while True:
        line = readline(max_bytes - size + 1)
        if not line:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        size += len(line)
        if size > max_bytes:
            raise ProtocolError(f"the server's reply exceeded {max_bytes / 1024:g} KiB")
        head, separator = line[:3], line[3:4]
        if not (len(head) == 3 and head.isdigit() and b"2" <= head[:1] <= b"5"):
            raise ProtocolError(f"the server sent an invalid reply code: {_shown(line)}")
        if code is not None and head != code:
            raise ProtocolError(f"the server's reply mixed codes {code.decode()} and {head.decode()}")
        code = head
        texts.append(line[4:].strip(b" \t\r\n"))
        if separator in _LAST_LINE_SEPARATORS:
            return int(code), b"\n".join(texts)
        if separator != b"-":
            raise ProtocolError(f"the server sent a malformed reply line: {_shown(line)}")
        if len(texts) >= max_lines:
            raise ProtocolError(f"the server's reply ran past {max_lines} lines")


def _shown(line: bytes) -> str:
    return repr(line[:40].decode("ascii", "replace").rstrip("\r\n"))


def _wait_at_most(sock: socket.socket, seconds: float) -> None:
    """Let the socket's next operation wait `seconds`, or up to TIMEOUT_SLACK_S longer.

    Setting a timeout is a system call that lets other threads take the GIL, which the sending
    thread then waits to get back: once for its write and once for its read, every message.
    A timeout that is already about right, as it is between messages, is left as it is."""
    current = sock.gettimeout()
    if current is None or not 0 <= current - seconds <= TIMEOUT_SLACK_S:
        sock.settimeout(seconds)


class _DeadlineSocketIO(socket.SocketIO):
    """A socket's reading side that gives up at `ends_at` (time.monotonic()) however slowly
    the bytes trickle in: each read may only wait for what is left."""

    ends_at = math.inf

    def readinto(self, buffer):
        left = self.ends_at - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        _wait_at_most(self._sock, left)
        return super().readinto(buffer)


class _BoundedReplies:
    """Mixed into smtplib.SMTP: bounded replies (see the module docstring), and a deadline on
    sends too. smtplib's connect, ehlo, starttls and auth all read through `getreply`."""

    def __init__(
        self, *, reply_timeout_s: float, ends_at: float = math.inf, secrets: tuple[str, str] = ("", ""), **kwargs
    ):
        """`secrets`: the (username, password) this session authenticates with, to redact."""
        self.reply_timeout_s = reply_timeout_s
        self.ends_at = ends_at
        self.secret_pattern = secret_pattern(*secrets)
        self._reader: _DeadlineSocketIO | None = None
        super().__init__(**kwargs)

    def _seconds_allowed(self) -> float:
        left = min(self.reply_timeout_s, self.ends_at - time.monotonic())
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def send(self, s) -> None:
        if self.sock:
            _wait_at_most(self.sock, self._seconds_allowed())  # reads leave the socket with their own
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None:  # new, or a socket just wrapped in TLS
            self._reader = _DeadlineSocketIO(self.sock, "rb")
            self.file = io.BufferedReader(self._reader)
        try:
            self._reader.ends_at = min(time.monotonic() + self.reply_timeout_s, self.ends_at)
            code, text = read_reply(self.file.readline)
        except smtplib.SMTPServerDisconnected:  # an OSError too: first
            self.close()
            raise
        except TimeoutError as error:
            self.close()
            raise smtplib.SMTPServerDisconnected(f"no complete reply within {self.reply_timeout_s:g} s") from error
        except OSError as error:
            self.close()
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {error}") from error
        # A 334 is an AUTH challenge the mechanism must read as sent; connection.py cleans one
        # that is left over at the end of the exchange (and so kept and shown).
        return code, text if code == 334 else self.redact(text)

    def redact(self, text: bytes) -> bytes:
        """`text` without this session's credentials, in any form (see redaction.py)."""
        return redact(text, self.secret_pattern)


class BoundedSMTP(_BoundedReplies, smtplib.SMTP):
    pass


class BoundedSMTPSSL(_BoundedReplies, smtplib.SMTP_SSL):
    pass
