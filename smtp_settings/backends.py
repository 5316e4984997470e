"""RotatingEmailBackend: a Django email backend that sends through a ConnectionPool.

    get_connection("smtp_settings.backends.RotatingEmailBackend", server="SES")

`send_messages` sends over up to the server's connection ceiling at once, and sets
`message.smtp_result` (an `SmtpResult`, see `results.py`) on every message. What it does on each reply:

- 421, at any stage: the session is over. Reconnect and resend the same bytes (same
  Message-ID). Not counted against `retries`; consecutive 421s back off 0, 1, 2, 4… s and
  give up after ConnectionPool.MAX_421_IN_A_ROW, leaving the message `deferred`.
- Other 4xx, and network errors: retry with exponential backoff and jitter, up to `retries`,
  then `deferred` with the last reply.
- A 4xx that says we send too fast ("454 Throttling failure", see learning.py): as above,
  and the server's rate is lowered for every process (`Limits.throttled`).
- 5xx: `failed` for that recipient at once. Other recipients of the message still go.
- No connection free within the server's wait_timeout (other threads or processes hold them
  all): this message is not tried; it comes back `deferred` and `stopped`, attempts 0.
- A full quota window (`MustWait` from the pool's limits): this message and the rest of the
  batch are not tried; they come back `deferred` and `stopped`, with `resume_at` saying when
  the window has room. Likewise, without `resume_at`, when the server is disabled or deleted
  meanwhile (its pool's limits learn that within a second).
- The link breaks after the final dot, before the reply (RFC 1047), or the reply to the dot
  breaks the protocol: the server may hold the message. Policy: record it `sent` with
  `ambiguous=True` rather than risk a duplicate (pass resend_ambiguous=True to prefer a
  duplicate over a possible loss).

Events carry the backend's `event_context`, updated with a message's own `event_context`
attribute if it has one (a subscriber id, say).

VERP: a message with a `bounce_reference` attribute (the caller's name for it: "d123" a
campaign delivery, "o45" an outbox message) that goes out through a server with a bounce
domain gets the envelope sender bounces+<reference>-<signature>@<bounce domain>
(bounces/verp.py), so a later bounce maps to it. The header From is unchanged. Without either,
or for the null sender (MAIL FROM:<>, itself a bounce), the envelope sender is as given. A
reference that is none (`verp.is_reference`: a letter and digits) fails the message there, and
an ESP's message goes without it (its webhooks' events then act on the address alone).

Two hooks for callers that keep their own books (campaigns do):
- `on_final_dot(message)` is called from the sending thread just before a message's content
  and final dot are written: before it the server cannot hold the message, after it it may.
  Recording that durably lets a caller that crashes tell "never delivered" from "maybe".
  If it raises, the message is not sent (its session is closed mid-DATA) and is `deferred`;
  if what it raises is `StopBatch`, no thread takes another message of the batch either.
- `on_result(message)` is called from the sending thread as soon as a message that was tried
  has its `smtp_result`, in the order the results came (a streak of failures, say). If it
  raises `StopBatch`, no thread takes another message of the batch.
- `rate_limiter`, an object with `wait_to_send()`, paces every message on top of the
  server's own rate limit (a campaign's rate, say).
`retries` overrides the server's for 4xx and network errors: a caller that retries in later
passes of its own (campaigns do) passes 0 and gets `deferred` at once.
Threads the backend starts close their database connections when done, in case a hook
opened one.

`send_messages` takes a list or any iterable; a generator is pulled only as threads are ready
for another message, so its caller can render messages just in time. Besides Django's
messages it takes `RawMessage`s (raw.py): their bytes and envelope go out as they are, with
the server's custom headers they lack prepended (the outbox's messages).

An ESP entry (esp/) is one more kind of server: its pool lends out API sessions under the
same limits, and each message is one call to the ESP's API through anymail (`_EspDelivery`),
or several when it has more recipients than one call may carry, with the same results,
events and hooks (on_final_dot runs just before each HTTP request). A 429 is the ESP's 421:
retried with backoff, and the server's rate lowered for the cluster.

`QueuedEmailBackend`, at the end, sends nothing itself: it puts messages in the outbox.

A failure never raises out of the batch, except that with fail_silently=False a batch in
which nothing at all was sent raises DeliveryFailed.
"""

import logging
import random
import re
import smtplib
import threading
import time
from email.utils import parseaddr
from functools import lru_cache, partial

from django import db
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import sanitize_address

from project.sqlite_writes import one_writer
from smtp_settings.bounces import verp
from smtp_settings.esp import client as esp_client
from smtp_settings.esp.messages import api_message
from smtp_settings.events import Kind
from smtp_settings.learning import is_throttle
from smtp_settings.limits import MustWait
from smtp_settings.mime import wire_bytes
from smtp_settings.models import EspMessage, OutboxMessage, SmtpServer
from smtp_settings.outbox.queue import Envelope, check, enqueue
from smtp_settings.pool import ConnectFailed, ConnectionPool, PoolTimeout, get_pool
from smtp_settings.raw import RawMessage, with_headers
from smtp_settings.results import DEFERRED, FAILED, SENT, RecipientResult, SmtpResult
from smtp_settings.transaction import BeforeDotFailed, ConnectionLost, SessionClosed, prepare_data

log = logging.getLogger(__name__)

# An address Django's sanitize_address gives back unchanged and parseaddr takes as it is: a
# dot-atom of common characters (no "=?", which the parser may read as an encoded word) at a
# domain of ASCII labels the IDNA codec passes through (1 to 63 characters each).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*")


def envelope_address(address: str, encoding: str) -> str:
    """The bare address for MAIL FROM/RCPT TO: "News <a@b.example>" gives "a@b.example",
    exactly as parseaddr(sanitize_address(address, encoding)) does, errors included, except
    that an address with a control character is refused (ValueError).

    Parsing an address the email package's way costs as much as rendering the message, and
    every recipient of a campaign is a new one: a plain address is taken as it is, and only
    the rest (display names, quotes, non-ASCII, anything odd) is parsed."""
    if isinstance(address, str) and _PLAIN_ADDRESS.fullmatch(address):
        return address
    return _parsed_address(address, encoding)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@lru_cache(maxsize=4096)
def _parsed_address(address: str, encoding: str) -> str:
    """A campaign repeats its From ("News <news@example.test>") on every message: recent ones
    are remembered. What the email package lets through with a control character in it (a NUL,
    say) is refused: no SMTP server should see one in an envelope."""
    parsed = parseaddr(sanitize_address(address, encoding))[1]
    if _CONTROL.search(parsed):
        raise ValueError(f"a control character in the address {parsed!r}")
    return parsed


class StopBatch(Exception):
    """Raised by an on_final_dot hook: hold this message back and send no more of the batch
    (the caller has lost its right to send, say). Messages the batch did not reach are left
    `deferred` with the reason, attempts 0."""


class DeliveryFailed(smtplib.SMTPException):
    """Nothing in the batch could be sent (raised only when fail_silently is False)."""


class RotatingEmailBackend(BaseEmailBackend):
    def __init__(
        self,
        fail_silently: bool = False,
        server: SmtpServer | str | int | None = None,
        event_context: dict | None = None,
        retry_backoff_s: float = 1.0,
        resend_ambiguous: bool = False,
        max_threads: int | None = None,
        on_final_dot=None,
        on_result=None,
        rate_limiter=None,
        retries: int | None = None,
        **kwargs,
    ):
        super().__init__(fail_silently=fail_silently, **kwargs)
        self.server = server
        self.event_context = dict(event_context or {})
        self.retry_backoff_s = retry_backoff_s
        self.resend_ambiguous = resend_ambiguous
        self.max_threads = max_threads
        self.on_final_dot = on_final_dot
        self.on_result = on_result
        self.rate_limiter = rate_limiter
        self.retries = retries

    def _resolve_server(self) -> SmtpServer:
        """The server to send through, fresh from the database (its settings may have changed
        since the caller loaded it); ImproperlyConfigured if it is disabled or gone."""
        server = self.server
        key = server.pk if isinstance(server, SmtpServer) else server
        servers = SmtpServer.objects.filter(enabled=True)
        chosen = servers.filter(pk=key) if isinstance(key, int) else servers.filter(name=key) if key else servers
        found = chosen.order_by("pk").first()
        if found is None:
            raise ImproperlyConfigured(
                f"SMTP server “{server}” is disabled or deleted" if server else "No enabled SMTP server"
            )
        return found

    def send_messages(self, email_messages) -> int:
        """Send a list of messages, or any iterable: a generator is advanced only as the
        sending threads are ready for another message, so it can render each one just in time."""
        if isinstance(email_messages, list | tuple) and not email_messages:
            return 0
        try:
            server = self._resolve_server()
        except ImproperlyConfigured as error:
            if not self.fail_silently:
                raise
            for message in email_messages if isinstance(email_messages, list | tuple) else ():
                message.smtp_result = SmtpResult(DEFERRED, None, f"not sent: {error}", attempts=0)
            return 0
        pool = get_pool(server)
        feed = _Feed(email_messages)
        share = pool.limits.share()  # the connections this process may use now
        sized = len(email_messages) if isinstance(email_messages, list | tuple) else share
        threads_wanted = min(share, sized, self.max_threads or sized)
        feed.working = threads_wanted
        workers = [threading.Thread(target=self._work_in_thread, args=(pool, feed)) for _ in range(threads_wanted - 1)]
        for worker in workers:
            worker.start()
        try:
            self._work(pool, feed)
        finally:
            for worker in workers:
                worker.join()
        for limit, value in pool.learner.take_learned().items():
            server.record_learned(limit, value)
        if feed.stopped is not None and isinstance(email_messages, list | tuple):
            for message in email_messages:
                if not hasattr(message, "smtp_result"):
                    message.smtp_result = SmtpResult(
                        DEFERRED,
                        None,
                        feed.stopped,
                        attempts=0,
                        server=server.name,
                        stopped=True,
                        resume_at=feed.resume_at,
                    )

        if feed.taken and feed.sent == 0 and not self.fail_silently:
            reasons = feed.reasons | ({feed.stopped} if feed.stopped else set())
            raise DeliveryFailed(f"none of {feed.taken} messages was sent: {'; '.join(sorted(reasons))}")
        return feed.sent

    def _work_in_thread(self, pool: ConnectionPool, feed: "_Feed") -> None:
        try:
            self._work(pool, feed)
        finally:
            db.connections.close_all()  # this thread's own, opened by a hook if at all

    def _work(self, pool: ConnectionPool, feed: "_Feed") -> None:
        """Send messages from the feed until it runs dry or is stopped, one ahead so the next
        message's envelope can be pipelined behind the current one's content."""
        current = self._next_delivery(pool, feed)
        while current is not None:
            current.following = self._next_delivery(pool, feed)
            current.message.smtp_result = result = current.run()
            feed.done(result)
            if self.on_result is not None:
                try:
                    self.on_result(current.message)
                except StopBatch as stop:
                    feed.stop(f"not sent: the batch was stopped: {stop}")
            following, current = current.following, current.following
            if following is None:
                break
            if feed.stopped is not None:
                current = None
                following.give_up(feed.stopped)
            elif result.stopped and feed.leave():
                # No connection came free for this thread (the ceiling, or this process's share
                # of it, is smaller than the threads): it leaves the batch to the others.
                current = None
                following.give_up(result.text)
                feed.done(following.message.smtp_result)

    def _next_delivery(self, pool: ConnectionPool, feed: "_Feed") -> "_Delivery | None":
        delivery = _EspDelivery if pool.config.kind == SmtpServer.Kind.ESP else _Delivery
        while (message := feed.next()) is not None:
            try:
                return delivery(self, pool, feed, message)
            except (ValueError, TypeError, UnicodeError, IndexError, AttributeError) as error:  # hostile address/header
                message.smtp_result = result = SmtpResult(
                    FAILED, None, f"not sent: {error}", attempts=0, server=pool.config.name
                )
                feed.done(result)
        return None


class _Feed:
    """The messages of one send_messages call, handed out to its threads one at a time, with
    counts of what became of them (it keeps no message: a generator's caller decides what
    stays in memory). `stopped` is set (to the reason) when an on_final_dot or on_result hook raised
    StopBatch: from then on no thread takes another message."""

    MAX_REASONS = 10  # distinct failure texts kept for DeliveryFailed

    def __init__(self, messages):
        self._messages = iter(messages)
        self._lock = threading.Lock()
        self.taken = self.sent = 0
        self.reasons: set[str] = set()
        self.stopped: str | None = None
        self.resume_at: float | None = None
        self.working = 1  # threads taking messages

    def next(self):
        with self._lock:
            if self.stopped is not None:
                return None
            message = next(self._messages, None)
            self.taken += message is not None
            return message

    def done(self, result: SmtpResult) -> None:
        with self._lock:
            if result.status == SENT:
                self.sent += 1
            elif len(self.reasons) < self.MAX_REASONS:
                self.reasons.add(result.text)

    def leave(self) -> bool:
        """A thread asks to stop taking messages; yes unless it is the last one working."""
        with self._lock:
            if self.working <= 1:
                return False
            self.working -= 1
            return True

    def stop(self, reason: str, resume_at: float | None = None) -> None:
        with self._lock:
            self.stopped, self.resume_at = reason, resume_at


class _Delivery:
    """Everything that happens to one message until it is sent, deferred or failed."""

    def __init__(self, backend: RotatingEmailBackend, pool: ConnectionPool, feed: _Feed, message):
        self._start(backend, pool, feed, message)
        if isinstance(message, RawMessage):  # the outbox's: bytes and envelope as they are
            self.mail_from, self.message_id = self._return_path(message.mail_from), message.message_id
            self.outcome = dict.fromkeys(message.recipients)
            if any(_CONTROL.search(address) for address in (self.mail_from, *self.outcome)):
                raise ValueError("a control character in the envelope")
            self.data = prepare_data(with_headers(message.data, self.config.custom_headers))
            return
        encoding = message.encoding or "utf-8"
        self.mail_from = self._return_path(envelope_address(message.from_email, encoding))
        self.outcome: dict[str, RecipientResult | None] = {
            envelope_address(address, encoding): None for address in message.recipients()
        }
        self.message_id, content = wire_bytes(message, self.config.custom_headers)
        self.data = prepare_data(content)

    def _start(self, backend: RotatingEmailBackend, pool: ConnectionPool, feed: _Feed, message) -> None:
        """What every kind of delivery keeps, whatever it sends through."""
        self.backend, self.pool, self.config, self.message, self.feed = backend, pool, pool.config, message, feed
        self.following: _Delivery | None = None  # the next message this thread sends
        self.handed_over = None  # a connection the previous message left with our envelope in flight
        self.context = {**backend.event_context, **getattr(message, "event_context", {})}
        self.attempts = self.temp_failures = self.in_a_row_421 = 0
        self.last: tuple[int | None, str] = (None, "")
        self.ambiguous = self.stopped = False

    def _return_path(self, mail_from: str) -> str:
        """The envelope sender through this server: VERP where it has a bounce domain and the
        message a reference (see the module docstring)."""
        reference = getattr(self.message, "bounce_reference", "")
        if not (reference and mail_from and self.config.bounce_domain):
            return mail_from
        return verp.address(reference, self.config.bounce_domain)

    def give_up(self, reason: str) -> None:
        """The batch stopped before this message's turn: it was not sent, and a connection the
        previous message left with our envelope in flight is closed."""
        if self.handed_over is not None:
            self.pool.checkin(self.handed_over, self.context)
            self.handed_over = None
        self.message.smtp_result = SmtpResult(
            DEFERRED, None, reason, attempts=0, server=self.config.name, stopped=True, resume_at=self.feed.resume_at
        )

    def pending(self) -> list[str]:
        return [address for address, result in self.outcome.items() if result is None]

    def emit(self, kind: str, conn=None, **fields) -> None:
        self.pool.emit(kind, conn, self.context, message_id=self.message_id, **fields)

    def run(self) -> SmtpResult:
        while pending := self.pending():
            self.attempts += 1
            self.deferrals: dict[str, RecipientResult] = {}  # the 4xx each recipient got in this attempt
            if not self._attempt(pending):
                break
        for address in self.pending():
            self.outcome[address] = self.deferrals.get(address) or RecipientResult(DEFERRED, *self.last)
        statuses = {result.status for result in self.outcome.values()}
        status = DEFERRED if DEFERRED in statuses else SENT if SENT in statuses else FAILED
        if status == DEFERRED and not self.stopped:  # a stopped one was not tried: it is not late
            self.emit(Kind.DEFERRED, code=self.last[0], text=self.last[1], detail={"attempts": self.attempts})
        return SmtpResult(
            status=status,
            code=self.last[0],
            text=self.last[1],
            attempts=self.attempts,
            ambiguous=self.ambiguous,
            server=self.config.name,
            recipients=dict(self.outcome),
            stopped=self.stopped,
            resume_at=self.feed.resume_at if self.stopped else None,
        )

    def _attempt(self, pending: list[str]) -> bool:
        """One try at the pending recipients; False when it is time to give up."""
        conn, self.handed_over = self.handed_over, None
        if conn is None:
            try:
                conn = self.pool.checkout(self.context)
            except PoolTimeout as error:
                return self._no_connection(error)
            except SessionClosed as error:
                return self._after_421(None, error)
            except ConnectFailed as error:
                self.last = (error.code, error.text or str(error.error))
                return self._retry_later(None, stage=error.step)

        batch = pending[: conn.rcptmax] if conn.rcptmax else pending
        if not self._turn(conn, len(batch)):
            return False
        try:
            if self.backend.rate_limiter is not None:
                self.backend.rate_limiter.wait_to_send()
            result = conn.transact(
                self.mail_from,
                batch,
                self.data,
                then=self._next_envelope(conn, batch, pending),
                before_dot=self._before_dot if self.backend.on_final_dot else None,
            )
        except SessionClosed as error:
            self.pool.session_closed(conn, error, self.context)
            self.pool.checkin(conn, self.context)
            return self._after_421(conn, error)
        except ConnectionLost as error:
            return self._after_lost(conn, error, batch)
        except BeforeDotFailed as error:
            return self._held_back(conn, error)
        self.in_a_row_421 = 0
        verdicts = _verdicts(result, batch)
        finished = len(batch) == len(pending) and not any(400 <= code < 500 for code, _, _ in verdicts)
        if conn.in_flight and finished:
            self.following.handed_over = conn  # its envelope is on the wire already
        else:
            self.pool.checkin(conn, self.context)
        return self._judge(conn, batch, verdicts)

    def _no_connection(self, error: PoolTimeout) -> bool:
        """Not tried: other senders held every connection."""
        self.last = (None, str(error))
        self._untried()
        return False

    def _turn(self, conn, units: int) -> bool:
        """Wait for this message's turn at the server's rates; False (the connection given
        back) when a quota window is full: this message and the rest of the batch wait."""
        try:
            self.pool.limits.wait_to_send(units)
        except MustWait as wait:
            self.pool.checkin(conn, self.context)
            self.feed.stop(wait.reason, resume_at=wait.until)
            self.last = (None, wait.reason)
            self._untried()
            return False
        return True

    def _held_back(self, conn, error: BeforeDotFailed) -> bool:
        """The on_final_dot hook raised: the rest of the message was not sent. It was not
        tried at all (`stopped`) unless an earlier transaction of it (recipients beyond the
        server's RCPTMAX, or an ESP's limit per call) went out: those recipients stay sent."""
        self.pool.checkin(conn, self.context)
        if isinstance(error.__cause__, StopBatch):
            self.feed.stop(f"not sent: the batch was stopped: {error}")
            self.last, self.stopped = (None, self.feed.stopped), not any(self.outcome.values())
        else:
            self.last = (None, f"not sent: on_final_dot failed: {error}")
        return False

    def _untried(self) -> None:
        """This attempt never reached the server. If no attempt did, the message was not
        tried at all (`stopped`): its caller may give it back without counting an attempt."""
        self.attempts -= 1
        self.stopped = self.attempts == 0 and not any(self.outcome.values())

    def _before_dot(self) -> None:
        self.backend.on_final_dot(self.message)

    def _next_envelope(self, conn, batch: list[str], pending: list[str]):
        """The following message's envelope, if it may ride on this connection right after us."""
        following = self.following
        if following is None or not conn.pipelining or len(batch) < len(pending):
            return None
        if not self.pool.limits.keep(conn.slot):
            return None  # beyond this process's share now (another one waits): it closes after us
        cap = self.pool.msgs_cap(conn)
        if cap and conn.sent + 1 >= cap:
            return None  # we rotate after this message
        age = self.config.max_conn_age
        if age and time.monotonic() - conn.opened_at >= age:
            return None
        recipients = following.pending()
        return following.mail_from, recipients[: conn.rcptmax] if conn.rcptmax else recipients

    def _judge(self, conn, batch: list[str], verdicts: list[tuple[int, str, str]]) -> bool:
        """Decide each recipient of a finished transaction, by the reply and the command it
        answered; retry the temporary failures (a recipient's own 4xx is its result if the
        retries run out)."""
        temporary_at = throttle = None
        for address, (code, text, stage) in zip(batch, verdicts, strict=True):
            self.last = (code, text)
            throttle = throttle or ((code, text) if is_throttle(code, text) else None)
            if code < 300:
                self.outcome[address] = RecipientResult(SENT, code, text, stage.lower())
            elif code >= 500:
                self.outcome[address] = RecipientResult(FAILED, code, text, stage.lower())
                self.emit(Kind.FAILURE, conn, stage=stage, code=code, text=text, recipient=address)
            else:
                temporary_at = stage
                self.deferrals[address] = RecipientResult(DEFERRED, code, text, stage.lower())
        if throttle is not None:
            self.pool.throttled(conn, *throttle, self.context)
        return True if temporary_at is None else self._retry_later(conn, stage=temporary_at)

    def _retry_later(self, conn, stage: str) -> bool:
        """A 4xx or a network error: back off and go again, unless retries are used up."""
        self.temp_failures += 1
        retries = self.config.retries if self.backend.retries is None else self.backend.retries
        if self.temp_failures > retries:
            return False
        delay = self.backend.retry_backoff_s * 2 ** (self.temp_failures - 1) * random.uniform(0.5, 1.5)
        self.emit(
            Kind.RETRY,
            conn,
            stage=stage,
            code=self.last[0],
            text=self.last[1],
            detail={"retry": self.temp_failures, "of": self.config.retries, "delay_s": round(delay, 3)},
        )
        time.sleep(delay)
        return True

    def _after_421(self, conn, error: SessionClosed) -> bool:
        self.last = (error.code, error.text)
        return self._reconnect(conn, error.stage)

    def _reconnect(self, conn, stage: str) -> bool:
        """The server ended the session: resend on a new one, backing off if it keeps doing so."""
        self.in_a_row_421 += 1
        if self.in_a_row_421 >= ConnectionPool.MAX_421_IN_A_ROW:
            return False
        delay = 0 if self.in_a_row_421 == 1 else self.backend.retry_backoff_s * 2 ** (self.in_a_row_421 - 2)
        self.emit(Kind.RECONNECT, conn, stage=stage, code=self.last[0], text=self.last[1], detail={"delay_s": delay})
        time.sleep(delay)
        return True

    def _after_lost(self, conn, error: ConnectionLost, batch: list[str]) -> bool:
        """The connection broke: report how, then give it back (the event is its end)."""
        if error.protocol_error:
            self.last = (None, f"bad reply at {error.stage}, connection closed: {error.error}")
        else:
            self.last = (None, f"connection lost at {error.stage}: {error.error}")
        if error.after_dot and not self.backend.resend_ambiguous:
            self.ambiguous = True
            for address in batch:
                self.outcome[address] = RecipientResult(SENT, None, self.last[1])
            self.emit(Kind.AMBIGUOUS, conn, stage=error.stage, text=self.last[1])
            self.pool.checkin(conn, self.context)
            return True
        kind = Kind.TIMEOUT if error.timed_out else Kind.PROTOCOL_ERROR if error.protocol_error else Kind.NETWORK_ERROR
        self.emit(kind, conn, stage=error.stage, text=str(error.error))
        self.pool.checkin(conn, self.context)
        if error.stage == "MAIL" and conn.sent and kind == Kind.NETWORK_ERROR:
            # The server had closed a session we reused (an idle drop): a new session is owed,
            # not a retry.
            return self._reconnect(conn, error.stage)
        return self._retry_later(conn, stage=error.stage)


class _EspDelivery(_Delivery):
    """A message for an ESP entry: the bookkeeping of `_Delivery` (attempts, retries, results,
    events, the hooks), with each attempt one call to the ESP's API through anymail on a
    session the pool lends out (esp/client.py). How each reply is judged:

    - accepted: each recipient as anymail's status says: rejected, invalid or failed is
      `failed`; queued, sent and unknown are `sent` (the ESP took the call: sending it again
      could only make a duplicate). A row of EspMessage remembers each message id, with the
      message's `bounce_reference`, for the ESP's webhooks.
    - 429 (the ESP's 421) and 5xx: retried with backoff, then `deferred`; a 429 lowers the
      server's rate for the whole cluster, as a throttle reply does.
    - any other status, or a message anymail cannot send: `failed`.
    - the request never left (refused, DNS, TLS, connect timeout): retried, then `deferred`.
    - the request left and no reply came, or a 2xx that cannot be read: `sent` and
      `ambiguous`, unless the backend prefers a duplicate (resend_ambiguous).

    Recipients per call: a message to more recipients than the ESP takes in one call (its
    limit, or the entry's max_batch below it: `conn.rcptmax`) goes as several calls, as a
    message beyond an SMTP server's RCPTMAX goes as several transactions: the same content,
    each call to at most that many of the recipients still pending, fenced by on_final_dot
    just before it, and judged as above for its own recipients only (sent; 429 and 5xx
    deferred; 400 failed). The message's result merges them as SMTP's partial acceptance
    does: deferred if any recipient is, else sent if any is, else failed. So:

    - A 429 or 5xx is retried (with the backend's retries left) for the pending recipients
      only: a call that went is never made again. Without retries left, its recipients and
      those of the calls not yet made are deferred, and no further call is made.
    - The fence refusing a call (StopBatch: a lost lease) stops the rest of the message;
      what went stays sent, and the message is `stopped` only if nothing of it went.
    - A caller that retries a deferred message itself (the outbox passes retries=0) sends it
      again whole, to every recipient, as after an SMTP server deferred some of a message's
      recipients: those of the calls that went get it twice (`recipients` says who)."""

    STAGE = "API"
    REFUSED_STATUSES = {"rejected", "invalid", "failed"}

    def __init__(self, backend: RotatingEmailBackend, pool: ConnectionPool, feed: _Feed, message):
        self._start(backend, pool, feed, message)
        encoding = "utf-8"
        if isinstance(message, RawMessage):
            if any(_CONTROL.search(address) for address in message.recipients):
                raise ValueError("a control character in the envelope")
            self.outcome = dict.fromkeys(message.recipients)
            self.message_id = message.message_id
        else:
            encoding = message.encoding or encoding
            self.outcome = {envelope_address(address, encoding): None for address in message.recipients()}
            headers = {name.lower(): value for name, value in message.extra_headers.items()}
            self.message_id = str(headers.get("message-id", ""))
        self.email = api_message(message, self.config.custom_headers, partial(envelope_address, encoding=encoding))

    @staticmethod
    def _batch(pending: list[str], most: int) -> list[str]:
        """The recipients of the next call: the first `most` pending addresses, and their
        duplicates in another case, which the ESP takes for the same address."""
        firsts = set(list(dict.fromkeys(address.lower() for address in pending))[:most])
        return [address for address in pending if address.lower() in firsts]

    def _attempt(self, pending: list[str]) -> bool:
        try:
            conn = self.pool.checkout(self.context)
        except PoolTimeout as error:
            return self._no_connection(error)
        batch = self._batch(pending, conn.rcptmax) if conn.rcptmax else pending
        if not self._turn(conn, len(batch)):
            return False
        email = self.email.for_recipients(batch)
        try:
            if self.backend.rate_limiter is not None:
                self.backend.rate_limiter.wait_to_send()
            reply = conn.send(email, before_send=self._before_dot if self.backend.on_final_dot else None)
        except BeforeDotFailed as error:
            return self._held_back(conn, error)
        self.pool.checkin(conn, self.context)
        self.last = (reply.code, reply.text)
        if reply.outcome == esp_client.ACCEPTED:
            self._accepted(conn, batch, reply)
            return True
        ambiguous = reply.outcome in (esp_client.LOST, esp_client.UNREADABLE)
        if ambiguous and not self.backend.resend_ambiguous:
            self.ambiguous = True
            for address in batch:
                self.outcome[address] = RecipientResult(SENT, reply.code, reply.text)
            self.emit(Kind.AMBIGUOUS, conn, stage=self.STAGE, code=reply.code, text=reply.text)
            return True
        if reply.outcome in (esp_client.UNSENT, esp_client.LOST):
            kind = Kind.TIMEOUT if reply.timed_out else Kind.NETWORK_ERROR
            self.emit(kind, conn, stage=self.STAGE, text=reply.text)
            return self._retry_later(conn, stage=self.STAGE)
        if reply.code == 429:
            self.pool.throttled(conn, reply.code, reply.text, self.context)
        if ambiguous or reply.code == 429 or (reply.code or 0) >= 500:
            return self._retry_later(conn, stage=self.STAGE)
        for address in batch:  # refused for good, or it cannot be sent at all
            self.outcome[address] = RecipientResult(FAILED, reply.code, reply.text)
            self.emit(Kind.FAILURE, conn, stage=self.STAGE, code=reply.code, text=reply.text, recipient=address)
        return True

    def _accepted(self, conn, batch: list[str], reply) -> None:
        remembered = []
        for address in batch:
            status, message_id = reply.statuses.get(address.lower(), ("unknown", ""))
            text = f"{status} by {conn.label}" + (f" as {message_id}" if message_id else "")
            self.last = (reply.code, text)
            if status in self.REFUSED_STATUSES:
                text = f"{text}: {reply.text}"
                self.outcome[address] = RecipientResult(FAILED, reply.code, text)
                self.emit(Kind.FAILURE, conn, stage=self.STAGE, code=reply.code, text=text, recipient=address)
            else:
                self.outcome[address] = RecipientResult(SENT, reply.code, text)
                if message_id:
                    remembered.append((address, message_id))
        self._remember(remembered)

    def _remember(self, sent: list[tuple[str, str]]) -> None:
        """Which message each id the ESP gave is, for its webhooks. The message went out
        whatever happens here: a failed write is logged, never a failed message."""
        reference = getattr(self.message, "bounce_reference", "")
        reference = reference if verp.is_reference(reference) else ""
        server_id = self.config.id
        rows = [
            EspMessage(message_id=message_id[:255], reference=reference, server_id=server_id, recipient=address[:254])
            for address, message_id in sent
        ]
        if not rows:
            return
        try:
            with one_writer():
                EspMessage.objects.bulk_create(rows)
        except db.Error:
            log.warning("could not remember the ESP's ids of message %s", self.message_id, exc_info=True)


def _verdicts(result, batch: list[str]) -> list[tuple[int, str, str]]:
    """For each recipient, the reply that decides it and its stage: a failed MAIL, its RCPT,
    or the end of DATA."""
    if result.mail[0] >= 300:
        return [(*result.mail, "MAIL")] * len(batch)
    return [
        (*result.rcpts[address], "RCPT") if result.rcpts[address][0] >= 300 else (*result.data, result.stage)
        for address in batch
    ]


class QueuedEmailBackend(BaseEmailBackend):
    """A Django email backend that puts messages in the outbox instead of sending them.

        EMAIL_BACKEND = "smtp_settings.backends.QueuedEmailBackend"
        get_connection("smtp_settings.backends.QueuedEmailBackend", server="SES", priority=10)

    `send_messages` writes every message, as the bytes Django makes of it, to the outbox in the
    caller's transaction (one insert for the list) and returns how many it queued. It touches
    no SMTP server: workers deliver the messages once the transaction commits, and nothing if
    it rolls back. `server` (an SmtpServer, its name or pk) routes them through that server;
    without it they take the relay's default route. A message the outbox refuses (an address
    with a line break, say) raises `Refused` and nothing of the call is queued; with
    fail_silently, only that message is left out."""

    def __init__(
        self, fail_silently: bool = False, server: SmtpServer | str | int | None = None, priority: int = 0, **kwargs
    ):
        super().__init__(fail_silently=fail_silently, **kwargs)
        self.server = server
        self.priority = priority

    def _route(self) -> list[int]:
        if self.server is None:
            return []
        key = self.server.pk if isinstance(self.server, SmtpServer) else self.server
        found = SmtpServer.objects.filter(**{"pk" if isinstance(key, int) else "name": key}).values_list(
            "pk", flat=True
        )
        if not found:
            raise ImproperlyConfigured(f"SMTP server “{self.server}” does not exist")
        return [found[0]]

    def send_messages(self, email_messages) -> int:
        messages = list(email_messages)
        if not messages:
            return 0
        route = self._route()
        envelopes = []
        for message in messages:
            try:
                envelopes.append(self._envelope(message, route))
            except ValueError:  # Refused, or an address that cannot be made an envelope
                if not self.fail_silently:
                    raise
        return len(enqueue(envelopes)) if envelopes else 0

    def _envelope(self, message, route: list[int]) -> Envelope:
        encoding = message.encoding or "utf-8"
        envelope = Envelope(
            mail_from=envelope_address(message.from_email, encoding),
            recipients=[envelope_address(address, encoding) for address in message.recipients()],
            data=wire_bytes(message, ())[1],
            source=OutboxMessage.Source.BACKEND,
            route=route,
            priority=self.priority,
        )
        check(envelope)
        return envelope
