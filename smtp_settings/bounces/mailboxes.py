"""Reading a bounce mailbox over IMAP or POP3 with TLS: each report is taken in (intake.py)
once, and only then marked (IMAP: a keyword of ours, $RelaydeckTaken, and \\Seen; a person who
reads the mailbox does not hide reports from us) or deleted (POP3's DELE, in sessions of
POP3_BATCH messages, as a POP3 server deletes only at QUIT).

- Exactly once. A report is known by the SHA-256 of its bytes (MailboxReport), written in the
  same transaction as its bounces: a message read again, because a crash came between the
  commit and \\Seen or DELE, or because two checks read the mailbox at once, is found there
  and only marked, never recorded twice.
- Bounded. Every answer must come within BOUNCE_MAILBOX_TIMEOUT_S (the socket's timeout), and
  the whole check within BOUNCE_MAILBOX_CHECK_S: a fuse cuts the connection then, whatever the
  server is doing (trickling a byte at a time, or talking without end never lets a socket
  timeout expire). A check reads at most BOUNCE_MAILBOX_MAX_MESSAGES reports, the oldest
  first, and at most BOUNCE_REPORT_MAX_BYTES of each: a larger report is kept cut, as not
  understood. No answer may run far past that size (IMAP), nor any line past poplib's bound.
- Secret. The password goes only to the mailbox's host, as its form allows; whatever the
  server says is cut free of the credentials before it is kept or shown (redaction.py).
"""

import hashlib
import imaplib
import logging
import poplib
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django_q.tasks import async_task

from project.sqlite_writes import one_writer
from smtp_settings.bounces import intake
from smtp_settings.connection import tls_context
from smtp_settings.models import Bounce, BounceMailbox, MailboxReport
from smtp_settings.redaction import redact, secret_pattern

log = logging.getLogger(__name__)

ERROR_LIMIT = 500  # characters of an error kept and shown
ANSWER_SLACK = 64 * 1024  # bytes an IMAP answer may carry beyond a whole report
TAKEN = "$RelaydeckTaken"  # the IMAP keyword on a report recorded (see _marks)
POP3_BATCH = 50  # messages read and deleted per POP3 session (see _read_pop3)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass
class CheckResult:
    taken: int = 0  # reports recorded
    again: int = 0  # read before (a lost \Seen or DELE, or another check at once): marked only
    left: int = 0  # unread messages beyond BOUNCE_MAILBOX_MAX_MESSAGES, for the next check
    error: str = ""


@dataclass
class MailboxProbe:
    messages: int = 0  # in the folder (IMAP) or the maildrop (POP3)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class Fuse:
    """Cuts a client's connections once `seconds` have passed since it was made."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds
        self.blown = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._blow)
        self._timer.daemon = True
        self._timer.start()

    def arm(self, sock: socket.socket) -> None:
        """Put a fresh connection on the fuse (a duplicate of it: TLS takes the original over)."""
        with self._lock:
            self._sockets.append(sock.dup())
            if self.blown:
                self._cut()

    def _blow(self) -> None:
        with self._lock:
            self.blown = True
            self._cut()

    def _cut(self) -> None:
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


class _OnFuse:
    """Mixed into imaplib's and poplib's clients: each connection goes on the fuse before its
    first byte, and speaks TLS from the start given `implicit_tls` (their own TLS classes wrap
    the socket, handshake included, before it could go on the fuse)."""

    fuse: Fuse
    implicit_tls: ssl.SSLContext | None
    host: str

    def _create_socket(self, timeout):
        sock = super()._create_socket(timeout)
        self.fuse.arm(sock)
        return self.implicit_tls.wrap_socket(sock, server_hostname=self.host) if self.implicit_tls else sock


class _FusedIMAP4(_OnFuse, imaplib.IMAP4):
    """imaplib's client on a fuse, with no answer past `max_answer_bytes` (imaplib would keep
    an endless answer in memory)."""

    def __init__(self, host: str, port: int, *, fuse: Fuse, implicit_tls, timeout: float, max_answer_bytes: int):
        self.fuse = fuse
        self.implicit_tls = implicit_tls
        self.max_answer_bytes = max_answer_bytes
        self.answer_bytes = 0
        super().__init__(host, port, timeout)

    def send(self, data):
        # A new command: its answer is counted afresh, and what the server said unasked before
        # it is dropped (imaplib would keep it, without bound, for a caller that never asks).
        self.answer_bytes = 0
        self.untagged_responses.clear()
        super().send(data)

    def readline(self):
        line = super().readline()
        self._count(len(line))
        return line

    def read(self, size):
        self._count(size)
        return super().read(size)

    def _count(self, size: int) -> None:
        self.answer_bytes += size
        if self.answer_bytes > self.max_answer_bytes:
            raise self.abort(f"the server's answer ran past {self.max_answer_bytes:,} bytes")


class _FusedPOP3(_OnFuse, poplib.POP3):
    """poplib's client on a fuse; it reads a message with a bound of its own (`retrieve`) and
    upgrades to TLS without poplib's unbounded CAPA."""

    def __init__(self, host: str, port: int, *, fuse: Fuse, implicit_tls, timeout: float):
        self.fuse = fuse
        self.implicit_tls = implicit_tls
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            if hasattr(self, "sock"):  # poplib leaves the connection open when the greeting fails
                self.close()
            raise

    def starttls(self, context: ssl.SSLContext) -> None:
        self._shortcmd("STLS")
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")

    def retrieve(self, which: int, limit: int) -> tuple[bytes, int]:
        """Message `which`: its first `limit` bytes (CRLF line ends, as on the wire), and its size.
        Lines of any length are read, in pieces; what is past `limit` is read and dropped."""
        self._shortcmd(f"RETR {which}")
        kept, size, line_start = bytearray(), 0, True
        while True:
            piece = self.file.readline(64 * 1024)
            if not piece:
                raise poplib.error_proto("-ERR the connection closed in the middle of a message")
            if line_start and piece.rstrip(b"\r\n") == b".":
                return bytes(kept), size
            if line_start and piece.startswith(b"."):
                piece = piece[1:]  # dot-stuffing
            size += len(piece)
            kept += piece[: max(0, limit - len(kept))]
            line_start = piece.endswith(b"\n")


# -- one session: connect, secure, log in, then read ------------------------------------------


class _Session:
    """Which step a session is at, so that an error says where it happened."""

    def __init__(self, mailbox: BounceMailbox):
        self.mailbox = mailbox
        self.step = "connect"
        self.context = tls_context(mailbox.tls_skip_verify)
        self.fuse = Fuse(settings.BOUNCE_MAILBOX_CHECK_S)

    def explain(self, error: BaseException) -> str:
        """One bounded sentence for `error`, free of the mailbox's credentials."""
        timeout = settings.BOUNCE_MAILBOX_TIMEOUT_S
        if self.fuse.blown:
            text = f"The check ran out of its {self.fuse.seconds:g} s at {self.step} (a slow or endless answer)."
        elif isinstance(error, ssl.SSLCertVerificationError):
            text = (
                f"The server's certificate is not trusted ({error.verify_message}). "
                "Skip TLS verification only for a test server."
            )
        elif isinstance(error, TimeoutError):
            text = f"No answer within {timeout} s at {self.step}."
        elif isinstance(error, ConnectionRefusedError):
            text = f"{self.mailbox.address} refused the connection."
        elif isinstance(error, socket.gaierror):
            text = f"The host name {self.mailbox.host} could not be resolved."
        elif isinstance(error, ssl.SSLError):
            text = f"TLS failed at {self.step}: {error.reason or error}."
        elif isinstance(error, imaplib.IMAP4.error | poplib.error_proto):
            said = error.args[0] if error.args else ""
            said = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
            failed = "Authentication failed" if self.step == "login" else f"{self.step} failed"
            text = f"{failed}: {said}"
        elif isinstance(error, OSError):
            text = f"Network error at {self.step}: {error.strerror or error}."
        else:
            text = f"{self.step} failed: {type(error).__name__}."
        pattern = secret_pattern(self.mailbox.username, self.mailbox.password)
        text = redact(text.encode(), pattern).decode("utf-8", "replace")
        text = _CONTROL.sub(" ", text)
        return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


@contextmanager
def _imap(session: _Session) -> Iterator[_FusedIMAP4]:
    mailbox = session.mailbox
    implicit = session.context if mailbox.tls == BounceMailbox.Tls.SSL else None
    client = _FusedIMAP4(
        mailbox.host,
        mailbox.port,
        fuse=session.fuse,
        implicit_tls=implicit,
        timeout=settings.BOUNCE_MAILBOX_TIMEOUT_S,
        max_answer_bytes=settings.BOUNCE_REPORT_MAX_BYTES + ANSWER_SLACK,
    )
    try:
        if not implicit:
            session.step = "STARTTLS"
            client.starttls(session.context)
        session.step = "login"
        client.login(mailbox.username, mailbox.password)
        yield client
        session.step = "LOGOUT"
        client.logout()
    finally:
        with suppress(OSError, imaplib.IMAP4.error):
            client.shutdown()


@contextmanager
def _pop3(session: _Session) -> Iterator[_FusedPOP3]:
    mailbox = session.mailbox
    implicit = session.context if mailbox.tls == BounceMailbox.Tls.SSL else None
    client = _FusedPOP3(
        mailbox.host, mailbox.port, fuse=session.fuse, implicit_tls=implicit, timeout=settings.BOUNCE_MAILBOX_TIMEOUT_S
    )
    try:
        if not implicit:
            session.step = "STLS"
            client.starttls(session.context)
        session.step = "login"
        client.user(mailbox.username)
        client.pass_(mailbox.password)
        yield client
        session.step = "QUIT"
        client.quit()  # only now does the server delete what DELE marked
    finally:
        with suppress(OSError):
            client.close()


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(answer: tuple[str, list]) -> list:
    """An IMAP command's data, if the server said OK."""
    kind, data = answer
    if kind != "OK":
        said = data[-1] if data else b""
        raise imaplib.IMAP4.error(f"{kind} {said.decode('utf-8', 'replace') if isinstance(said, bytes) else said}")
    return data


_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


def _fetched(data: list) -> tuple[bytes, int] | None:
    """The message's bytes and size in a FETCH answer (None if it is gone meanwhile)."""
    literal = next((item for item in data if isinstance(item, tuple)), None)
    if literal is None:
        return None
    meta = b" ".join(part[0] if isinstance(part, tuple) else part or b"" for part in data)
    size = _SIZE.search(meta)
    return literal[1], int(size.group(1)) if size else len(literal[1])


def _marks(client: _FusedIMAP4) -> tuple[str, str]:
    """(the SEARCH for reports not taken yet, the flags that mark one taken). A keyword of our
    own where the folder keeps keywords: a person who opens the mailbox sets \\Seen, and would
    otherwise hide reports from us for good; else \\Seen."""
    _, flags = client.response("PERMANENTFLAGS")
    if flags and flags[0] and b"\\*" in flags[0]:
        return f"UNKEYWORD {TAKEN}", f"({TAKEN} \\Seen)"
    return "UNSEEN", "(\\Seen)"


def _read_imap(session: _Session, take: Callable[[bytes, int], bool], result: CheckResult) -> None:
    limit, most = settings.BOUNCE_REPORT_MAX_BYTES, settings.BOUNCE_MAILBOX_MAX_MESSAGES
    with _imap(session) as client:
        session.step = "SELECT"
        _ok(client.select(_quoted(session.mailbox.folder)))
        not_taken, taken = _marks(client)
        session.step = "SEARCH"
        uids = (_ok(client.uid("SEARCH", not_taken))[0] or b"").split()
        result.left = max(0, len(uids) - most)
        for uid in uids[:most]:
            session.step = "FETCH"
            found = _fetched(_ok(client.uid("FETCH", uid, f"(RFC822.SIZE BODY.PEEK[]<0.{limit}>)")))
            if found is None:
                continue
            data, size = found
            _count(result, take(data, size if len(data) >= limit else len(data)))
            session.step = "STORE"
            _ok(client.uid("STORE", uid, "+FLAGS.SILENT", taken))


def _read_pop3(session: _Session, take: Callable[[bytes, int], bool], result: CheckResult) -> None:
    """In sessions of at most POP3_BATCH messages: POP3 deletes only at QUIT, so a check cut
    short keeps the sessions it finished, and the next check goes on from there."""
    limit, most = settings.BOUNCE_REPORT_MAX_BYTES, settings.BOUNCE_MAILBOX_MAX_MESSAGES
    read = 0
    while read < most:
        with _pop3(session) as client:
            session.step = "STAT"
            count, _ = client.stat()
            batch = min(count, POP3_BATCH, most - read)
            for which in range(1, batch + 1):
                session.step = "RETR"
                data, size = client.retrieve(which, limit)
                _count(result, take(data, size))
                session.step = "DELE"
                client.dele(which)
        read += batch
        result.left = count - batch
        if not result.left:
            return


def _count(result: CheckResult, taken: bool) -> None:
    if taken:
        result.taken += 1
    else:
        result.again += 1


def take_once(mailbox: BounceMailbox, data: bytes, size: int) -> bool:
    """Record the report `data` (the first bytes of one of `size` bytes), unless this mailbox's
    reports hold it already; whether it was recorded now."""
    digest = hashlib.sha256(data).hexdigest()
    if MailboxReport.objects.filter(mailbox=mailbox, digest=digest).exists():  # taken before: not read again
        return False
    reading = intake.read(data, size=size)  # before the write lock: reading may take a while
    with one_writer(), transaction.atomic():
        try:
            with transaction.atomic():
                MailboxReport.objects.create(mailbox=mailbox, digest=digest)
        except IntegrityError:  # taken by a check that just committed it
            return False
        reading.record(Bounce.Source.MAILBOX, mailbox)
    return True


_READERS = {BounceMailbox.Protocol.IMAP: _read_imap, BounceMailbox.Protocol.POP3: _read_pop3}


def check(mailbox: BounceMailbox) -> CheckResult:
    """Read the mailbox's new reports (see the module docstring) and keep what the check did
    on the mailbox. Never raises for anything the server or the network does."""
    result, session = CheckResult(), _Session(mailbox)
    try:
        _READERS[mailbox.protocol](session, lambda data, size: take_once(mailbox, data, size), result)
    except Exception as error:  # whatever the server did, the check ends with what it took
        result.error = session.explain(error)
        log.warning("Bounce mailbox %s: %s", mailbox.name, result.error)
    finally:
        session.fuse.close()
    mailbox.record_check(result.taken, result.error)
    return result


def probe(mailbox: BounceMailbox) -> MailboxProbe:
    """Log in and count the messages (IMAP: EXAMINE the folder, read-only; POP3: STAT),
    changing nothing. Never raises for anything the server or the network does."""
    result, session = MailboxProbe(), _Session(mailbox)
    try:
        if mailbox.protocol == BounceMailbox.Protocol.IMAP:
            with _imap(session) as client:
                session.step = "EXAMINE"
                result.messages = int(_ok(client.select(_quoted(mailbox.folder), readonly=True))[0])
        else:
            with _pop3(session) as client:
                session.step = "STAT"
                result.messages = client.stat()[0]
    except Exception as error:
        result.error = session.explain(error)
    finally:
        session.fuse.close()
    return result


def schedule_checks() -> None:
    """A check of each enabled mailbox, as a task of its own (every few minutes: setup_schedules)."""
    for pk in BounceMailbox.objects.filter(enabled=True).values_list("pk", flat=True):
        async_task("smtp_settings.tasks.check_bounce_mailbox", pk, group=f"bounce-mailbox-{pk}")
