"""A local SMTP server that behaves like real providers, for demos and tests.

It runs aiosmtpd on its own event loop in a background thread, binds a random loopback port
unless told otherwise, and records every message it accepts so tests can assert on what a
real server received. Provider behaviours are opt-in:

- max_msgs_per_session: answer the MAIL after N messages with Amazon SES's 421 and hang up;
- max_conns: greet the connection beyond N concurrent ones with Exchange's 421 4.3.2;
- tempfail_rate: answer 451 to that fraction of messages (after the final dot);
- reject: refuse recipients matching a regular expression, with `reject_reply` (by default a
  550 5.1.1, as for an unknown user; "{address}" in it is the recipient);
- latency_ms: wait before every reply;
- limits: advertise RFC 9422 LIMITS (e.g. "MAILMAX=10 RCPTMAX=2") and enforce them;
- fault: a callable(stage, sandbox) that may return "drop" to cut the connection at
  "DATA" (before the content) or "dot" (after the final dot, before the reply: the message
  is received, the client never hears so), or a reply to send instead;
- inbox and inbox_keep: keep the last `inbox_keep` messages received in the Maildir `inbox`
  (sandbox_inbox/maildir.py), for the dashboard's sandbox inbox; off unless asked for;
- bounce and bounce_to: accept the message, then, as an MTA that finds later that a mailbox
  does not exist, send a DSN (5.1.1) for each recipient matching the pattern (fnmatch, case
  ignored) to the message's envelope sender, by SMTP through bounce_to (host, port): how
  Relaydeck's bounce listener can be tried end to end.
"""

import asyncio
import fnmatch
import hmac
import logging
import queue
import random
import re
import smtplib
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from smtp_settings.bounces import dsn
from smtp_settings.loop_server import LoopServer
from smtp_settings.sandbox_inbox.maildir import InboxWriter

log = logging.getLogger(__name__)

SES_421 = "421 Connection closed by server. Maximum message count per session reached."
EXCHANGE_421 = (
    "421 4.3.2 The maximum number of concurrent connections has exceeded a limit, closing transmission channel"
)


@dataclass(frozen=True)
class ReceivedMessage:
    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str
    received_at: float  # time.monotonic() when the final dot was read


def busiest_window(times: list[float], window_s: float = 1.0) -> int:
    """The most of `times` (in seconds, sorted) within any `window_s` seconds, start included,
    end not: what a server enforcing "N a second" over a sliding window would count."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


class _Handler:
    def __init__(self, sandbox: "SandboxServer"):
        self.sandbox = sandbox

    async def _reply(self, server, stage: str, default: str, action: str | None = None) -> str:
        """The reply for `stage`, after the configured latency, unless a fault says otherwise
        (`action`: the fault's answer if the caller asked it already)."""
        sandbox = self.sandbox
        if action is None and sandbox.fault:
            action = sandbox.fault(stage, sandbox)
        if sandbox.latency_ms:
            await asyncio.sleep(sandbox.latency_ms / 1000)
        if action == "drop":
            server.transport.abort()
            return default  # written to a closed transport: the client hears nothing
        return action or default

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        extra = ["250-PIPELINING"] if self.sandbox.pipelining else []
        if self.sandbox.limits:
            extra.append(f"250-LIMITS {self.sandbox.limits}")
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        sandbox = self.sandbox
        cap = sandbox.max_msgs_per_session or sandbox.limit("MAILMAX")
        if cap and sandbox.session_messages[id(session)] >= cap:
            sandbox.count("421_sent")
            server.loop.call_soon(server.transport.close)
            return await self._reply(server, "MAIL", SES_421)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return await self._reply(server, "MAIL", "250 2.1.0 Ok")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        sandbox = self.sandbox
        if sandbox.reject and sandbox.reject.search(address):
            sandbox.count("rejected")
            return await self._reply(server, "RCPT", sandbox.reject_reply.format(address=address))
        rcpt_max = sandbox.limit("RCPTMAX")
        if rcpt_max and len(envelope.rcpt_tos) >= rcpt_max:
            return await self._reply(server, "RCPT", "452 4.5.3 Too many recipients")
        envelope.rcpt_tos.append(address)
        return await self._reply(server, "RCPT", "250 2.1.5 Ok")

    async def handle_DATA(self, server, session, envelope):
        sandbox = self.sandbox
        if sandbox.tempfail_rate and sandbox.random.random() < sandbox.tempfail_rate:
            sandbox.count("tempfailed")
            return await self._reply(server, "dot", "451 4.3.0 Temporary failure, please try again later")
        action = sandbox.fault("dot", sandbox) if sandbox.fault else None
        if action in (None, "drop"):
            # Queued before the reply, as an MTA does: a client that vanishes after its final
            # dot still has its message delivered (the RFC 1047 duplicate risk).
            content = envelope.original_content or envelope.content
            sandbox.record(
                session,
                ReceivedMessage(
                    session_id=id(session),
                    mail_from=envelope.mail_from,
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=content if sandbox.keep_bodies else b"",
                    message_id=str(BytesHeaderParser().parsebytes(content).get("Message-ID", "")),
                    received_at=time.monotonic(),
                ),
            )
            if sandbox.inbox:
                sandbox.inbox.put(envelope.mail_from, tuple(envelope.rcpt_tos), content)
            if sandbox.bouncer:
                sandbox.bouncer.bounce(envelope.mail_from, envelope.rcpt_tos, content)
        return await self._reply(server, "dot", "250 2.0.0 Ok: queued", action)

    async def auth_CRAM__MD5(self, server, args) -> AuthResult:
        """CRAM-MD5 (RFC 2195), which aiosmtpd lacks; offered only with cram_md5=True."""
        challenge = f"<{self.sandbox.random.getrandbits(64)}@sandbox.relaydeck.test>".encode()
        answer = await server.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)  # aiosmtpd has answered already
        return AuthResult(success=self.sandbox.check_cram_md5(challenge, answer), handled=False)


class _SandboxSMTP(SMTP):
    def __init__(self, sandbox: "SandboxServer", **kwargs):
        super().__init__(_Handler(sandbox), **kwargs)
        self.sandbox = sandbox

    async def _handle_client(self):
        sandbox = self.sandbox
        refusal = sandbox.refuse_with or (sandbox.max_conns and sandbox.active >= sandbox.max_conns and EXCHANGE_421)
        if refusal:
            sandbox.count("refused")
            await self.push(refusal)
            self.transport.close()
            return
        sandbox.session_started()
        try:
            await super()._handle_client()
        finally:
            sandbox.session_ended(self.session)

    def eof_received(self):
        """aiosmtpd ends the session the moment the client's FIN arrives, dropping a message
        whose final dot is already in its buffer. An MTA reads what came before the FIN first
        and delivers that message (RFC 1047's duplicate risk): so does the sandbox."""
        if self.session.ssl is not None:
            return super().eof_received()
        asyncio.get_running_loop().create_task(self._end_when_read())
        return True  # keep the transport until then

    async def _end_when_read(self) -> None:
        while self._reader._buffer:  # private, but the only way to see what is still unread
            await asyncio.sleep(0.001)
        self._handler_coroutine.cancel()
        if self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg):
        fault = self.sandbox.fault
        if fault and fault("DATA", self.sandbox) == "drop":
            self.transport.abort()
            return
        await super().smtp_DATA(arg)


class _Bouncer:
    """Sends the sandbox's DSNs from a thread of its own, one SMTP session each: at most
    MAX_WAITING wait; one more, like a DSN the target does not take, is logged and counted,
    and the sandbox goes on."""

    MAX_WAITING = 100
    TIMEOUT_S = 10

    def __init__(self, pattern: str, target: tuple[str, int], count: Callable[[str], None]):
        self.pattern = pattern.lower()
        self.target = target
        self.count = count
        self._waiting: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="smtp-sandbox-bounces", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send those waiting (within TIMEOUT_S each), then stop."""
        self._waiting.put(None)
        self._thread.join(timeout=self.TIMEOUT_S * 2)

    def bounce(self, mail_from: str, recipients, original: bytes) -> None:
        """Queue a DSN to `mail_from` for each of `recipients` the pattern matches (none for a
        message from the null sender: a bounce is never bounced)."""
        if mail_from in ("", "<>"):
            return
        for recipient in recipients:
            if not fnmatch.fnmatchcase(recipient.lower(), self.pattern):
                continue
            if self._waiting.qsize() >= self.MAX_WAITING:
                log.warning("Sandbox: %d DSNs wait already; the one for %s is dropped", self.MAX_WAITING, recipient)
                self.count("bounces_failed")
                continue
            self._waiting.put((mail_from, recipient, original))

    def _run(self) -> None:
        while (waiting := self._waiting.get()) is not None:
            mail_from, recipient, original = waiting
            report = dsn.notification(original, recipient, to=mail_from)
            try:
                with smtplib.SMTP(*self.target, timeout=self.TIMEOUT_S) as smtp:
                    smtp.sendmail("", [mail_from], report)
            except (OSError, smtplib.SMTPException) as error:
                log.warning("Sandbox: the DSN for %s could not be sent to %s:%d: %s", recipient, *self.target, error)
                self.count("bounces_failed")
            else:
                self.count("bounces_sent")


class SandboxServer:
    """An aiosmtpd server on 127.0.0.1 with provider-like behaviour (see the module docstring).

    auth: "user:password" to offer and require AUTH PLAIN/LOGIN (UTF-8, as RFC 4954 allows);
        with cram_md5=True, CRAM-MD5 too. Each attempt's (login, password) is kept in `auth_attempts`.
    tls_context: a server-side SSLContext; offered as STARTTLS, or from the first byte
        with implicit_tls=True.
    refuse_with: answer every connection with this reply (e.g. a 421 or 554) and hang up.
    bounce, bounce_to: the recipients to send a DSN for, and the (host, port) to send it through.
    inbox, inbox_keep: the Maildir to keep the last `inbox_keep` messages received in.
    keep_bodies: keep each message's bytes in `received` (tests read them); a long-running
        sandbox process keeps only their envelopes and Message-IDs, for its summary.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: str | None = None,
        cram_md5: bool = False,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        refuse_with: str | None = None,
        max_msgs_per_session: int = 0,
        max_conns: int = 0,
        tempfail_rate: float = 0.0,
        reject: str | None = None,
        reject_reply: str = "550 5.1.1 <{address}>: Recipient address rejected",
        latency_ms: float = 0,
        pipelining: bool = False,
        limits: str = "",
        fault: Callable[[str, "SandboxServer"], str | None] | None = None,
        bounce: str | None = None,
        bounce_to: tuple[str, int] | None = None,
        inbox: Path | None = None,
        inbox_keep: int = 0,
        keep_bodies: bool = True,
        seed: int = 0,
    ):
        if bool(bounce) != bool(bounce_to):
            raise ValueError("bounce and bounce_to go together")
        if bool(inbox) != bool(inbox_keep):
            raise ValueError("inbox and inbox_keep go together")
        self.host, self.port = host, port
        self.credentials = tuple(auth.split(":", 1)) if auth else None
        self.cram_md5 = cram_md5
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.refuse_with = refuse_with
        self.max_msgs_per_session = max_msgs_per_session
        self.max_conns = max_conns
        self.tempfail_rate = tempfail_rate
        self.reject = re.compile(reject) if reject else None
        self.reject_reply = reject_reply
        self.latency_ms = latency_ms
        self.pipelining = pipelining
        self.limits = limits
        self.fault = fault
        self.keep_bodies = keep_bodies
        self.random = random.Random(seed)

        self.received: list[ReceivedMessage] = []
        self.auth_attempts: list[tuple[str, str] | None] = []  # (login, password) as received
        self.counters: Counter = Counter()
        self.bouncer = _Bouncer(bounce, bounce_to, self.count) if bounce else None
        self.inbox = InboxWriter(inbox, inbox_keep, self.count) if inbox else None
        self.session_messages: Counter = Counter()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._serving = LoopServer("smtp-sandbox")

    # -- bookkeeping (called on the server's event loop; read from other threads) --

    def limit(self, name: str) -> int:
        match = re.search(rf"\b{name}=(\d+)", self.limits)
        return int(match.group(1)) if match else 0

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def record(self, session, message: ReceivedMessage) -> None:
        with self._lock:
            self.received.append(message)
            self.session_messages[id(session)] += 1

    def session_started(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.counters["sessions"] += 1

    def session_ended(self, session) -> None:
        with self._lock:
            self.active -= 1
            self.session_messages.pop(id(session), None)

    def summary(self) -> dict:
        """Counts a person or a test can check: sessions, messages, duplicates, replies sent,
        the most messages received in any one second and the seconds from the first to the last."""
        with self._lock:
            ids = Counter(message.message_id for message in self.received)
            times = [message.received_at for message in self.received]  # in order: one event loop
            return {
                "sessions": self.counters["sessions"],
                "refused_connections": self.counters["refused"],
                "max_concurrent_sessions": self.max_active,
                "received": len(self.received),
                "unique_message_ids": len(ids),
                "duplicates": sum(count - 1 for count in ids.values()),
                "replied_421": self.counters["421_sent"],
                "tempfailed": self.counters["tempfailed"],
                "rejected_recipients": self.counters["rejected"],
                "max_per_second": busiest_window(times),
                "receiving_s": round(times[-1] - times[0], 3) if times else 0.0,
                "bounces_sent": self.counters["bounces_sent"],
                "bounces_failed": self.counters["bounces_failed"],
                "inbox_written": self.counters["inbox_written"],
                "inbox_left_out": self.counters["inbox_left_out"],
            }

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        attempt = None
        if isinstance(auth_data, LoginPassword):
            attempt = (auth_data.login.decode(), auth_data.password.decode())
        with self._lock:
            self.auth_attempts.append(attempt)
        return AuthResult(success=attempt == self.credentials, handled=False)

    def check_cram_md5(self, challenge: bytes, answer: bytes) -> bool:
        user, _, digest = answer.rpartition(b" ")
        login, password = (part.encode() for part in self.credentials)
        return user == login and hmac.compare_digest(digest, hmac.digest(password, challenge, "md5").hex().encode())

    def _protocol(self) -> SMTP:
        options = {"hostname": "sandbox.relaydeck.test", "ident": "Relaydeck sandbox", "loop": self._serving.loop}
        if self.credentials:
            options |= {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
            options["auth_exclude_mechanism"] = [] if self.cram_md5 else ["CRAM-MD5"]
        if self.tls_context and not self.implicit_tls:
            options["tls_context"] = self.tls_context
        return _SandboxSMTP(self, **options)

    # -- lifecycle --

    def start(self) -> "SandboxServer":
        if self.inbox:
            self.inbox.start()
        ssl_context = self.tls_context if self.implicit_tls else None
        self.port = self._serving.start(self._protocol, self.host, self.port, ssl_context)
        if self.bouncer:
            self.bouncer.start()
        return self

    def stop(self) -> None:
        self._serving.stop()
        if self.bouncer:
            self.bouncer.stop()
        if self.inbox:
            self.inbox.stop()

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
