"""The relay's SMTP server: aiosmtpd sessions that hand each message to the outbox writer and
answer the final dot with its reply, 250 only once the message is committed.

Who may send: a client that authenticated (AUTH PLAIN or LOGIN with a relay credential), whose
mail goes out through the credential's servers; or, without AUTH, a client of the trusted
networks, whose mail takes the default route. Anyone else gets 530 at RCPT: never an open relay.

Bounce reports are the exception: any client may send a DSN or a complaint report to a bounce
address of ours (reports.py), from the null sender or any other, and it is recorded, not
relayed. So MAIL is accepted from anyone, for the recipients to decide; a transaction holds
bounce addresses only, or none (550 5.5.1 for a recipient that would mix them).

With a certificate, STARTTLS is offered and a client must use it before AUTH, unless it
connects from loopback or a trusted network. Without one, AUTH is offered on the plain
connection: the relay listens on loopback by default, where nothing can overhear it (the
command warns when it listens elsewhere without a certificate).

Envelope addresses are checked as they come (control characters, CR/LF smuggling, bytes that
are not UTF-8, non-ASCII without SMTPUTF8: 553), recipients beyond RELAY_MAX_RECIPIENTS get
452, a message over RELAY_MAX_MESSAGE_BYTES 552 (SIZE is advertised, and MAIL's SIZE= checked).
Sessions beyond max_sessions are greeted with 421; a client silent for RELAY_TIMEOUT_S is cut
off, and so is one that has not logged in within RELAY_LOGIN_TIMEOUT_S (unless trusted, or
once a bounce address of ours was accepted: a reporting server needs no login, and a large
report may take it longer than that to send) or that failed AUTH three times; a command sent
more often than COMMAND_CALL_LIMIT allows ends the session (421); aiosmtpd bounds command lines
(512 bytes and a little more for MAIL) and lines of data (1,000 bytes, as RFC 5321 has it:
longer ones get 500).
"""

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterable

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from aiosmtpd.smtp import Envelope as SessionEnvelope
from django.conf import settings
from django.db import DatabaseError

from smtp_settings.loop_server import LoopServer
from smtp_settings.models import OutboxMessage
from smtp_settings.outbox.queue import Envelope, Refused, check_address
from smtp_settings.relay import reports
from smtp_settings.relay.credentials import MAX_PENDING_CHECKS, Busy, Logins, Sender
from smtp_settings.relay.writer import DEADLINE_S, OutboxWriter, refusal

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.0/8", "::1/128")
AUTH_FAILURE_DELAY_S = 1.0  # before a 535: a guesser gets one try a second per connection
MAX_AUTH_FAILURES = 3  # the third ends the session
# Times a command may be sent in one session: a kept connection sends MAIL, RCPT, DATA and RSET
# for every message, and may check it is alive with NOOP; nothing else needs repeating.
COMMAND_CALL_LIMIT = {"*": 1_000_000, "NOOP": 10_000} | dict.fromkeys(
    ["AUTH", "EHLO", "HELO", "STARTTLS", "HELP", "VRFY", "EXPN"], 10
)
TOO_MANY_SESSIONS = "421 4.3.2 Too many connections to the relay; please try again later"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure; please try again later"
AUTH_BUSY = "454 4.7.0 Too many logins at once; please try again later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
TOO_MANY_AUTH_FAILURES = "421 4.7.0 Too many failed logins; closing the connection"
LOGIN_TIMEOUT = "421 4.7.0 No login in time; closing the connection"
MIXED = "550 5.5.1 A bounce report goes to bounce addresses only; send other mail in a transaction of its own"
# A path as nearly every client writes it, <dot-atom@domain> and then its parameters, if any:
# read by a pattern, since aiosmtpd's parser (the email package's) took a tenth of a session's
# time; anything else still goes to it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?=[^\s(])|\Z)")


def tls_from_settings() -> ssl.SSLContext | None:
    """The server context for STARTTLS from RELAY_TLS_CERT and RELAY_TLS_KEY, if they are set."""
    if not settings.RELAY_TLS_CERT:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.RELAY_TLS_CERT, settings.RELAY_TLS_KEY)
    return context


def _networks(cidrs: Iterable[str]) -> tuple:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _within(host: str, networks: tuple) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(address in network for network in networks)


def _address_refusal(address: str, field: str, smtputf8: bool) -> str | None:
    """The reply refusing an envelope address, if it must be refused."""
    if not smtputf8 and not address.isascii():
        return f"553 5.6.7 {field}: a non-ASCII address needs SMTPUTF8"
    try:
        check_address(address, field)
    except Refused as error:
        return refusal(error)
    return None


def _sender_address(address: str) -> str:
    return "" if address == "<>" else address  # aiosmtpd keeps the null sender as "<>"


class _Envelope(SessionEnvelope):
    reports = False  # its recipients are bounce addresses: its message is recorded, not sent


class _Handler:
    def __init__(self, relay: "Relay"):
        self.relay = relay

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if reply := _address_refusal(_sender_address(address), "mail_from", envelope.smtp_utf8):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= settings.RELAY_MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if reply := _address_refusal(address, "to", envelope.smtp_utf8):
            return reply
        may_relay = session.authenticated or server.trusted
        try:
            bounce_address = await self.relay.reports.is_bounce_address(address, may_relay)
        except (reports.Busy, DatabaseError):
            log.warning("Relay: could not check a bounce address for %s", server.client, exc_info=True)
            return reports.CANNOT_CHECK
        if bounce_address is False:
            return reports.UNKNOWN_BOUNCE_ADDRESS
        if bounce_address is None and not may_relay:
            return AUTH_REQUIRED
        if envelope.rcpt_tos and envelope.reports != bool(bounce_address):
            return MIXED
        envelope.reports = bool(bounce_address)
        if bounce_address:
            server.lift_login_deadline()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if envelope.reports:
            reply = await self.relay.reports.take(envelope.original_content, list(envelope.rcpt_tos), server.client)
            server.replies[reply[:1]] += 1
            return reply
        sender = session.auth_data if session.authenticated else Sender(server.client)
        message = Envelope(
            mail_from=_sender_address(envelope.mail_from),
            recipients=list(envelope.rcpt_tos),
            data=envelope.original_content,
            source=OutboxMessage.Source.RELAY,
            submitted_by=sender.name,
            route=list(sender.route),
        )
        reply = await self.relay.writer.submit(message, sender)
        server.replies[reply[:1]] += 1
        if reply.startswith("421"):
            server.loop.call_soon(server.transport.close)  # once the reply is written
        return reply

    async def handle_exception(self, error):
        log.exception("Relay: a session failed")  # aiosmtpd would tell the client what went wrong
        return "451 4.3.0 Local error; please try again later"


class _RelaySMTP(SMTP):
    """One client connection."""

    def __init__(self, relay: "Relay"):
        super().__init__(
            _Handler(relay),
            hostname=relay.hostname,
            ident="ESMTP Relaydeck relay",
            data_size_limit=settings.RELAY_MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            tls_context=relay.tls_context,
            timeout=settings.RELAY_TIMEOUT_S,
            command_call_limit=COMMAND_CALL_LIMIT,
            loop=relay.loop,
        )
        self.relay = relay
        self.client = ""
        self.trusted = False
        self.replies = {"2": 0, "4": 0, "5": 0}  # to final dots
        self.auth_failures = 0
        self.started = time.monotonic()
        self._login_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        first = self._original_transport is None  # else after STARTTLS, with a new session
        super().connection_made(transport)
        peer = self.session.peer
        self.client = peer[0] if isinstance(peer, tuple) else str(peer)
        self.trusted = self.relay.trusts(self.client)
        # aiosmtpd decides once per server whether AUTH waits for TLS; here it is per client.
        self._auth_require_tls = self.tls_context is not None and not self.relay.is_local(self.client)
        if first and not self.trusted:
            self._login_deadline = self.loop.call_later(settings.RELAY_LOGIN_TIMEOUT_S, self._login_timed_out)

    def connection_lost(self, error):
        self.lift_login_deadline()
        super().connection_lost(error)

    def lift_login_deadline(self) -> None:
        """No login needed any more: the client reports a bounce (RELAY_TIMEOUT_S still holds)."""
        if self._login_deadline:
            self._login_deadline.cancel()
            self._login_deadline = None

    def _login_timed_out(self) -> None:
        """Cut off a client that did not log in in time: else anyone could hold every session."""
        if self.session.authenticated or self.transport is None:
            return
        log.info("Relay: %s did not log in within %s s", self.client, settings.RELAY_LOGIN_TIMEOUT_S)
        self._writer.write(f"{LOGIN_TIMEOUT}\r\n".encode())
        self.transport.close()

    async def _handle_client(self):
        relay = self.relay
        if relay.sessions >= relay.max_sessions:
            log.warning("Relay: refused a connection from %s, %d sessions already", self.client, relay.sessions)
            with contextlib.suppress(ConnectionError):
                await self.push(TOO_MANY_SESSIONS)
            self.transport.close()
            return
        relay.sessions += 1
        try:
            await super()._handle_client()
        finally:
            relay.sessions -= 1
            log.info(
                "Relay session from %s (%s) ended after %.1f s: %d messages accepted, %d deferred, %d refused"
                ", %d failed AUTH",
                self.client,
                self.session.auth_data.name if self.session.authenticated else "no AUTH",
                time.monotonic() - self.started,
                self.replies["2"],
                self.replies["4"],
                self.replies["5"],
                self.auth_failures,
            )

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of a MAIL or RCPT argument and what follows it (see _PLAIN_PATH)."""
        if (path := _PLAIN_PATH.match(arg)) and not (
            self.local_part_limit and len(path[1].rpartition("@")[0]) > self.local_part_limit
        ):
            return path[1], arg[path.end() :]
        return super()._getaddr(arg)

    def _create_envelope(self) -> _Envelope:
        return _Envelope()

    async def check_auth_needed(self, caller_method: str) -> bool:
        """Whether to answer 530: MAIL is taken from anyone, and RCPT decides (_Handler), since
        bounce reports need no AUTH; DATA follows from the recipients taken."""
        if self.session.authenticated or self.trusted or caller_method in ("MAIL", "RCPT") or self.envelope.reports:
            return False
        await self.push(AUTH_REQUIRED)
        return True

    # AUTH: aiosmtpd reads the login and password, then calls _authenticate synchronously, on
    # the event loop, where the password hasher would stall every session. So _authenticate
    # only hands the login on, and _verified checks it on a thread of its own.

    def _authenticate(self, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=False, handled=False, auth_data=auth_data)

    async def auth_PLAIN(self, _, args) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _, args) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))

    async def _verified(self, result: AuthResult) -> AuthResult:
        if not isinstance(result.auth_data, LoginPassword):
            return result  # malformed, and answered already
        login, password = result.auth_data
        try:
            sender = await self.relay.logins.authenticate(login, password)
        except Busy:
            log.warning("Relay: too many logins waiting for the password hasher; one from %s deferred", self.client)
            return AuthResult(success=False, handled=False, message=AUTH_BUSY)
        except DatabaseError:
            log.exception("Relay: could not check a login from %s", self.client)
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if sender is not None:
            return AuthResult(success=True, auth_data=sender)
        self.auth_failures += 1
        await asyncio.sleep(AUTH_FAILURE_DELAY_S)
        if self.auth_failures < MAX_AUTH_FAILURES:
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8
        await self.push(TOO_MANY_AUTH_FAILURES)
        self.transport.close()
        return AuthResult(success=False, handled=True)


class Relay:
    """The relay on `host`:`port` (0: any free port, then in `port`), run by an event loop on a
    thread of its own, beside the outbox writer's.

    trusted_networks: CIDRs whose clients may send without AUTH (default RELAY_TRUSTED_NETWORKS).
    local_networks: CIDRs whose clients may AUTH without STARTTLS (loopback; trusted ones too).
    tls_context: offered as STARTTLS (default: from RELAY_TLS_CERT and RELAY_TLS_KEY, if set).
    max_sessions: client connections at once, at most (default RELAY_MAX_SESSIONS).
    max_pending_logins: password checks running or waiting, at most (more: 454; credentials.py).
    writer_deadline_s: how long a session waits for the writer to take its message up (writer.py),
        or for a bounce report to be taken up (reports.py).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        trusted_networks: Iterable[str] | None = None,
        local_networks: Iterable[str] = LOOPBACK,
        tls_context: ssl.SSLContext | None = None,
        max_sessions: int | None = None,
        max_pending_logins: int = MAX_PENDING_CHECKS,
        writer_deadline_s: float = DEADLINE_S,
    ):
        self.host, self.port = host, port
        self.trusted_networks = _networks(
            settings.RELAY_TRUSTED_NETWORKS if trusted_networks is None else trusted_networks
        )
        self.local_networks = _networks(local_networks)
        self.tls_context = tls_context or tls_from_settings()
        self.max_sessions = settings.RELAY_MAX_SESSIONS if max_sessions is None else max_sessions
        self.hostname = socket.gethostname()
        self.sessions = 0  # touched on the event loop only
        self.writer = OutboxWriter(writer_deadline_s)
        self.logins = Logins(max_pending_logins)
        self.reports = reports.Reports(deadline_s=writer_deadline_s)
        self._serving = LoopServer("smtp-relay")

    def trusts(self, host: str) -> bool:
        """Whether a client from `host` may send without AUTH."""
        return _within(host, self.trusted_networks)

    def is_local(self, host: str) -> bool:
        """Whether a client from `host` may AUTH without TLS."""
        return _within(host, self.trusted_networks + self.local_networks)

    def start(self) -> "Relay":
        self.port = self._serving.start(lambda: _RelaySMTP(self), self.host, self.port)
        self.writer.start()
        return self

    def stop(self) -> None:
        """Stop listening, answer every message already handed over, then end the sessions."""
        if self.loop is None:
            return
        self._serving.stop_listening()
        self.writer.stop()
        self._serving.stop(timeout_s=10)
        self.logins.shutdown()
        self.reports.shutdown()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._serving.loop
