"""Group commit: the messages of every session waiting, written to the outbox in one transaction.

Sessions do not write their messages themselves: the ORM would block the event loop, and on
SQLite a commit each would queue them one behind the other. They hand them to one writer
thread and wait for its answer. While the writer commits one group the next one gathers, so a
group grows with the load (one message for a lone client, dozens under fifty) and a commit is
paid per group, not per message, without a lone client waiting for company.

Each message is checked first: one the outbox refuses gets its own refusal, and so does one
whose relay login was deleted, disabled or given another password since the session logged
in; the others are written all the same. The answer is the reply for the client's final dot:
250 once the group is committed, 451 if the commit failed (nothing of it was written: the
clients keep their copies and try again). A group whose commit fails is written again one
message at a time, so that one message the database will not take fails alone.

A session waits at most `deadline_s` for the writer to take its message up: if the writer is
stuck (a database lock held elsewhere) or gone, the message is answered 451 and never written.
Whether it was taken is decided under the writer's lock, so a message being written is never
answered 451 (its client would send it again: a duplicate); it gets the commit's answer,
however long that takes. A message whose client left before the writer took it up is not
written either: nobody was told it was accepted.

Waking the delivery after a commit costs a query, so a thread of its own does it, off the
sessions' path: one wake-up for every commit since its last one, each reading what is
committed by then. A relay killed between a 250 and that wake-up loses nothing: the outbox
watchdog wakes a sender for what is queued (every minute, and when a worker starts); if the
kill came between a sender's row and its task, once that row's lease (OUTBOX_LEASE_S) is out.
"""

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction

from project.sqlite_writes import one_writer
from smtp_settings.models import OutboxMessage, RelayCredential
from smtp_settings.outbox import queue
from smtp_settings.outbox.queue import Envelope, Refused, build, save
from smtp_settings.relay.credentials import Sender

log = logging.getLogger(__name__)

MAX_GROUP = 500  # messages in one transaction, at most
MAX_GROUP_BYTES = 32 * 1024 * 1024  # and their size (one message may pass it)
DEADLINE_S = 30.0  # a session waits this long for the writer to take its message up
COMMIT_FAILED = "451 4.3.0 The message could not be queued; please try again later"
NOT_TAKEN = "451 4.3.0 The relay is too busy to queue the message; please try again later"
SHUTTING_DOWN = "421 4.3.2 The relay is shutting down; please try again later"
WRITER_GONE = "421 4.3.0 The relay cannot queue messages; please try again later"
LOGIN_GONE = "530 5.7.0 Authentication required: this relay login was deleted or disabled"
LOGIN_CHANGED = "451 4.7.0 This relay login's password was changed; log in again"
_REFUSAL_CODES = {"mail_from": "553 5.1.7", "to": "553 5.1.3"}


def refusal(error: Refused) -> str:
    """The SMTP reply for what the outbox refuses: a bad address, or a bad message."""
    return f"{_REFUSAL_CODES.get(error.field, '554 5.6.0')} {error}"


@dataclass(eq=False)
class _Handover:
    envelope: Envelope
    sender: Sender
    answer: asyncio.Future
    taken: bool = False  # by the writer: it will be answered
    dropped: bool = False  # before that, by its session: it will not be written


class OutboxWriter:
    """The thread that writes the relay's messages (see the module docstring)."""

    def __init__(self, deadline_s: float = DEADLINE_S):
        self.deadline_s = deadline_s
        self._waiting: collections.deque[_Handover] = collections.deque()
        self._stopped = False
        self._ready = threading.Condition()  # its lock guards _waiting, _stopped, taken and dropped
        self._thread = threading.Thread(target=self._run, name="relay-outbox-writer", daemon=True)
        self._waker = _Waker()

    def start(self) -> "OutboxWriter":
        self._waker.start()
        self._thread.start()
        return self

    async def submit(self, envelope: Envelope, sender: Sender) -> str:
        """The reply for this message, once it is committed (or not). On the event loop."""
        loop = asyncio.get_running_loop()
        handover = _Handover(envelope, sender, loop.create_future())
        with self._ready:
            if self._stopped:
                return SHUTTING_DOWN
            if self._thread.ident is not None and not self._thread.is_alive():
                return WRITER_GONE
            self._waiting.append(handover)
            self._ready.notify()
        deadline = loop.call_later(self.deadline_s, self._expire, handover)
        try:
            return await handover.answer
        except asyncio.CancelledError:  # its client left
            self._drop(handover)
            raise
        finally:
            deadline.cancel()

    def _expire(self, handover: _Handover) -> None:
        """At the deadline, on the event loop: 451 unless the writer has taken the message up."""
        if self._drop(handover) and not handover.answer.done():
            log.warning("The relay's writer did not take a message up in %s s; it was answered 451", self.deadline_s)
            handover.answer.set_result(NOT_TAKEN)

    def _drop(self, handover: _Handover) -> bool:
        """Whether the message was dropped before the writer took it up."""
        with self._ready:
            handover.dropped = not handover.taken
            return handover.dropped

    def stop(self, timeout_s: float = 30) -> None:
        """Answer every message submitted so far, then stop."""
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join(timeout_s)
        self._waker.stop(timeout_s)

    def _run(self) -> None:
        try:
            last = False
            while not last:
                group, last = self._take()
                if group:
                    try:
                        replies = self._replies(group)
                    except BaseException:  # what ends the thread: its sessions must not wait for ever
                        _answer(group, [COMMIT_FAILED] * len(group))
                        raise
                    _answer(group, replies)
        finally:
            connection.close()

    def _take(self) -> tuple[list[_Handover], bool]:
        """The messages waiting, after waiting for the first; and whether stop() came after them."""
        with self._ready:
            while not self._waiting and not self._stopped:
                self._ready.wait()
            group, size = [], 0
            while self._waiting and len(group) < MAX_GROUP and size < MAX_GROUP_BYTES:
                handover = self._waiting.popleft()
                if not handover.dropped:
                    handover.taken = True
                    group.append(handover)
                    size += len(handover.envelope.data)
            return group, self._stopped and not self._waiting

    def _replies(self, group: list[_Handover]) -> list[str]:
        try:
            return self._write(group)
        except Exception:
            log.exception("The relay could not queue %d messages; they were answered 451", len(group))
            connection.close()
            return [COMMIT_FAILED] * len(group)

    def _write(self, group: list[_Handover]) -> list[str]:
        """Each message's reply, once those the outbox takes are committed in one transaction
        (or, if that fails, one at a time)."""
        replies, built = {}, []
        for n, handover in enumerate(group):
            try:
                built.append((n, handover.sender, build(handover.envelope)))
            except Refused as error:
                replies[n] = refusal(error)
        try:
            replies |= _committed(built, self._waker.ring)
        except Exception:
            log.exception("The relay could not queue %d messages together; trying each alone", len(built))
            connection.close()  # if it broke, the next try opens a fresh one
            replies |= _each_committed(built, self._waker.ring)
        return [replies[n] for n in range(len(group))]


class _Waker:
    """The thread that wakes the delivery after the writer's commits (see the module docstring)."""

    def __init__(self):
        self._rung = False
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="relay-outbox-waker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def ring(self) -> None:
        with self._changed:
            self._rung = True
            self._changed.notify()

    def stop(self, timeout_s: float) -> None:
        """Wake the delivery a last time if a commit asked for it, then stop."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._rung and not self._stopped:
                        self._changed.wait()
                    if not self._rung:
                        return
                    self._rung = False  # before waking: a commit from now on rings again
                try:
                    with one_writer():  # a sender asked for is a write, beside the writer's
                        queue.wake()
                except Exception:
                    log.exception("The relay could not wake the outbox delivery; its watchdog will")
                    connection.close()
        finally:
            connection.close()


def _each_committed(built: list[tuple[int, Sender, OutboxMessage]], then: Callable[[], None]) -> dict[int, str]:
    """The replies for the `built` messages, each committed alone: only a message the database
    refuses (or a database still out of reach) gets 451."""
    replies = {}
    for one in built:
        try:
            replies |= _committed([one], then)
        except Exception:
            log.exception("The relay could not queue a message; it was answered 451")
            connection.close()
            replies[one[0]] = COMMIT_FAILED
    return replies


def _committed(built: list[tuple[int, Sender, OutboxMessage]], then: Callable[[], None]) -> dict[int, str]:
    """The replies for the `built` messages (by their number), once they are committed; `then`
    is called after the commit."""
    replies, kept = {}, []
    if not built:
        return replies
    with one_writer(), transaction.atomic():
        logins = _logins([sender for _, sender, _ in built])
        for n, sender, message in built:
            if sender.credential_id is None or logins.get(sender.credential_id) == sender.password_hash:
                kept.append((n, message))
            else:
                replies[n] = LOGIN_CHANGED if sender.credential_id in logins else LOGIN_GONE
        if kept:
            save([message for _, message in kept], then)
    return replies | {n: f"250 2.0.0 Ok: queued as {message.pk}" for n, message in kept}


def _logins(senders: list[Sender]) -> dict[int, str]:
    """The password hash of each enabled credential these senders logged in with."""
    ids = {sender.credential_id for sender in senders if sender.credential_id is not None}
    if not ids:
        return {}
    return dict(RelayCredential.objects.filter(pk__in=ids, enabled=True).values_list("pk", "password_hash"))


def _answer(group: list[_Handover], replies: list[str]) -> None:
    """Give each session its reply, in one wake-up of the event loop for the group, not one
    per message: each would hand the interpreter lock back and forth between this thread and
    the loop's."""
    group[0].answer.get_loop().call_soon_threadsafe(_set, group, replies)


def _set(group: list[_Handover], replies: list[str]) -> None:
    for handover, reply in zip(group, replies, strict=True):
        if not handover.answer.done():  # cancelled meanwhile, its client gone
            handover.answer.set_result(reply)
