"""The sandbox's inbox: the last messages it received, as a Maildir (the `new/` and `tmp/`
folders any mail client reads) that the sandbox process writes and the dashboard reads.

The sandbox never waits on it: messages go to a writer thread through a queue bounded in bytes
(a message beyond MAX_WAITING_BYTES is counted and left out), and the SQLite database the
dashboard writes is not touched. Each file is written to `tmp/` and renamed into `new/`, so a
reader never sees half a message; it holds `Return-Path` and `Delivered-To` lines for the
envelope, then the message's first STORED_BYTES. Only the newest `keep` files stay. A write that
fails (a full disk) leaves nothing behind in `tmp/`, and `tmp/` is emptied of what a killed
sandbox left there at start. Only the sandbox's user may read the inbox (0o700, 0o600).

File names start with the time received in nanoseconds, 20 digits: sorted by name is sorted by
time. The dashboard opens only names of that shape, inside the inbox's `new/`."""

import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from smtp_settings.outbox.reading import CONTROL, PARSED_BYTES, Reading, decoded, read

log = logging.getLogger(__name__)

STORED_BYTES = 1024 * 1024  # of each message, at most, are kept
HEADER_BYTES = 64 * 1024  # of a message, at most, are read for its line in the list
MAX_WAITING_BYTES = 64 * 1024 * 1024  # of messages waiting to be written; beyond, the sandbox leaves them out
ENVELOPE_RECIPIENTS = 100  # Delivered-To lines, at most
LISTED = 200  # characters of a header shown in the list
NAME = re.compile(r"\d{20}\.P\d{1,10}Q\d{1,20}\.relaydeck")


def _envelope_line(name: str, address: str) -> bytes:
    return f"{name}: <{CONTROL.sub('', address)[:1000]}>\r\n".encode("utf-8", "replace")


class InboxWriter:
    """Writes what the sandbox receives into `directory`, keeping the newest `keep` messages."""

    def __init__(self, directory: Path, keep: int, count: Callable[[str], None]):
        self.new, self.tmp = Path(directory) / "new", Path(directory) / "tmp"
        self.keep = keep
        self.count = count
        self._waiting: queue.Queue = queue.Queue()
        self._waiting_bytes = 0
        self._lock = threading.Lock()  # of _waiting_bytes
        self._kept: deque[str] = deque()
        self._written = 0
        self._thread = threading.Thread(target=self._run, name="smtp-sandbox-inbox", daemon=True)

    def start(self) -> None:
        for folder in (self.new, self.tmp):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.new.parent, self.new, self.tmp):  # also those made before, by another umask
            folder.chmod(0o700)
        for name in os.listdir(self.tmp):
            if NAME.fullmatch(name):  # half written when a sandbox was killed
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp / name)
        self._kept.extend(sorted(name for name in os.listdir(self.new) if NAME.fullmatch(name)))
        self._prune()
        self._thread.start()

    def stop(self) -> None:
        """Write those waiting, then stop."""
        self._waiting.put(None)
        self._thread.join(timeout=30)

    def put(self, mail_from: str, recipients: tuple[str, ...], data: bytes) -> None:
        data = data[:STORED_BYTES]
        with self._lock:
            if self._waiting_bytes + len(data) > MAX_WAITING_BYTES:
                self.count("inbox_left_out")
                return
            self._waiting_bytes += len(data)
        self._waiting.put((mail_from, recipients, data))

    def _run(self) -> None:
        while (waiting := self._waiting.get()) is not None:
            try:
                self._write(*waiting)
            except OSError as error:
                log.warning("Sandbox: a message could not be written to the inbox in %s: %s", self.new.parent, error)
                self.count("inbox_left_out")
            except Exception:  # whatever it is, the next message is written
                log.exception("Sandbox: a message could not be written to the inbox in %s", self.new.parent)
                self.count("inbox_left_out")
            else:
                self.count("inbox_written")
            finally:
                with self._lock:
                    self._waiting_bytes -= len(waiting[2])

    def _write(self, mail_from: str, recipients: tuple[str, ...], data: bytes) -> None:
        self._written += 1
        name = f"{time.time_ns():020d}.P{os.getpid()}Q{self._written}.relaydeck"
        envelope = _envelope_line("Return-Path", mail_from) + b"".join(
            _envelope_line("Delivered-To", address) for address in recipients[:ENVELOPE_RECIPIENTS]
        )
        try:
            with open(os.open(self.tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
                file.write(envelope + data)
            os.replace(self.tmp / name, self.new / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp / name)
            raise
        self._kept.append(name)
        self._prune()

    def _prune(self) -> None:
        while len(self._kept) > self.keep:
            with contextlib.suppress(FileNotFoundError):  # someone removed it already
                os.unlink(self.new / self._kept.popleft())


@dataclass
class Listed:
    name: str
    received_at: datetime
    sender: str
    to: str
    subject: str


@dataclass
class Page:
    rows: list[Listed]
    older: str | None  # the `before` of the next page, if there is one


def _received_at(name: str) -> datetime:
    return datetime.fromtimestamp(int(name[:20]) / 1e9, tz=UTC)


def _names(directory: Path) -> list[str]:
    """The messages' names, newest first (none if the inbox was never written)."""
    try:
        return sorted((name for name in os.listdir(Path(directory) / "new") if NAME.fullmatch(name)), reverse=True)
    except FileNotFoundError:
        return []


def _head(directory: Path, name: str, size: int) -> tuple[bytes, int] | None:
    """The first `size` bytes of the message, and its whole size; None if it is gone."""
    try:
        with open(Path(directory) / "new" / name, "rb") as file:
            return file.read(size), os.fstat(file.fileno()).st_size
    except FileNotFoundError:  # pruned meanwhile
        return None


def page(directory: Path, before: str | None, size: int) -> Page:
    """Up to `size` messages, newest first, older than the name `before` if given."""
    names = [name for name in _names(directory) if before is None or name < before]
    rows = []
    for name in names[:size]:
        head = _head(directory, name, HEADER_BYTES)
        if head is None:
            continue
        headers = BytesHeaderParser(policy=compat32).parsebytes(head[0])

        def shown(header: str, headers=headers) -> str:
            value = headers.get(header)
            return "" if value is None else CONTROL.sub(" ", decoded(header, str(value)))[:LISTED]

        rows.append(Listed(name, _received_at(name), shown("From"), shown("To"), shown("Subject")))
    return Page(rows, names[size - 1] if len(names) > size else None)


@dataclass
class Message:
    name: str
    received_at: datetime
    size: int
    reading: Reading


def message(directory: Path, name: str) -> Message | None:
    """The message called `name`, read as the outbox page reads one; None if there is none."""
    if not NAME.fullmatch(name):
        return None
    head = _head(directory, name, PARSED_BYTES + 1)  # one more byte than is read: `reading.cut` tells
    if head is None:
        return None
    data, size = head
    return Message(name, _received_at(name), size, read(data, html=True))
