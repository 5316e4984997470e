"""Group commit: the messages of every session waiting, written to the outbox in one transaction.

Sessions do not write their messages themselves: the ORM would block the event loop, and on
SQLite a commit each would queue them one behind the other. They hand them to one writer
thread and wait for its answer. While the writer commits one group the next one gathers, so a
group grows with the load (one message for a lone client, dozens under fifty) and a commit is
paid per group, not per message, without a lone client waiting for company.

Each message is checked first: one the outbox refuses gets its own refusal and the others are
written all the same. The answer is the reply for the client's final dot: 250 once the group
is committed, 451 if the commit failed (nothing of the group was written: the clients keep
their copies and try again). A message whose client left before the writer took it up is not
written: nobody was told it was accepted.
"""

import asyncio
import logging
import queue
import threading

from django.db import connection

from project.sqlite_writes import one_writer
from smtp_settings.outbox.queue import Envelope, Refused, check, enqueue

log = logging.getLogger(__name__)

MAX_GROUP = 500  # messages in one transaction, at most
MAX_GROUP_BYTES = 32 * 1024 * 1024  # and their size (one message may pass it)
COMMIT_FAILED = "451 4.3.0 The message could not be queued; please try again later"
SHUTTING_DOWN = "421 4.3.2 The relay is shutting down; please try again later"
_REFUSAL_CODES = {"mail_from": "553 5.1.7", "to": "553 5.1.3"}


def refusal(error: Refused) -> str:
    """The SMTP reply for what the outbox refuses: a bad address, or a bad message."""
    return f"{_REFUSAL_CODES.get(error.field, '554 5.6.0')} {error}"


class OutboxWriter:
    """The thread that writes the relay's messages (see the module docstring)."""

    def __init__(self):
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()  # (envelope, answer), then None once stopped
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="relay-outbox-writer", daemon=True)

    def start(self) -> "OutboxWriter":
        self._thread.start()
        return self

    def submit(self, envelope: Envelope) -> asyncio.Future:
        """The reply for this message, once it is committed (or not). On the event loop."""
        answer = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._stopped:
                answer.set_result(SHUTTING_DOWN)
            else:
                self._waiting.put((envelope, answer))
        return answer

    def stop(self, timeout_s: float = 30) -> None:
        """Answer every message submitted so far, then stop."""
        with self._lock:
            self._stopped = True
            self._waiting.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        last = False
        while not last:
            group, last = self._gather()
            if group:
                replies = self._write([envelope for envelope, _ in group])
                # One wake-up of the event loop for the group, not one per message: each would
                # hand the interpreter lock back and forth between this thread and the loop's.
                answers = [answer for _, answer in group]
                answers[0].get_loop().call_soon_threadsafe(_answer, answers, replies)
        connection.close()

    def _gather(self) -> tuple[list, bool]:
        """The messages waiting, after blocking for the first; and whether stop() came after them."""
        group, size = [], 0
        item = self._waiting.get()
        while item is not None:
            envelope, answer = item
            if not answer.cancelled():  # cancelled: its client has left
                group.append(item)
                size += len(envelope.data)
            if len(group) >= MAX_GROUP or size >= MAX_GROUP_BYTES:
                return group, False
            try:
                item = self._waiting.get_nowait()
            except queue.Empty:
                return group, False
        return group, True

    def _write(self, envelopes: list[Envelope]) -> list[str]:
        """Each envelope's reply, once those the outbox takes are committed in one transaction."""
        replies, valid = [], []
        for envelope in envelopes:
            try:
                check(envelope)
            except Refused as error:
                replies.append(refusal(error))
            else:
                replies.append(None)
                valid.append(envelope)
        if not valid:
            return replies
        try:
            with one_writer():
                queued = iter(enqueue(valid))
        except Exception:
            log.exception("The relay could not queue %d messages; they were answered 451", len(valid))
            connection.close()  # if it broke, the next group opens a fresh one
            return [reply or COMMIT_FAILED for reply in replies]
        return [reply or f"250 2.0.0 Ok: queued as {next(queued).pk}" for reply in replies]


def _answer(answers: list[asyncio.Future], replies: list[str]) -> None:
    for answer, reply in zip(answers, replies, strict=True):
        if not answer.done():  # cancelled meanwhile, its client gone
            answer.set_result(reply)
