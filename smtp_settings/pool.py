"""A pool of SMTP connections to one server that keeps the server's limits.

Guarantees:
- At most `Limits.ceiling()` connections are open (the server's max_conns, or fewer once
  the server has refused connections); a caller waits up to `wait_timeout` for one.
- A connection carries at most the effective per-connection cap of messages (max_msgs_per_conn,
  the server's RFC 9422 MAILMAX, or a cap learned from the server's 421s), then is closed with
  QUIT. Connections idle for `idle_timeout` or older than `max_conn_age` are closed too.
- A connection that saw a 421, a network error, a reply out of bounds or syntax (`replies.py`)
  or a failed RSET is never used again: smtplib closes its socket on some of these, and a
  session the server gave up on is gone either way.
- Every notable thing is reported as a `PoolEvent` through `smtp_event`.

Sending one transaction is `PooledConnection.transact`, which raises `SessionClosed` (421) or
`ConnectionLost` (network) and otherwise returns each reply for the caller to judge.
"""

import itertools
import math
import re
import smtplib
import threading
import time
from dataclasses import dataclass, field, fields

from smtp_settings.connection import Deadline, SmtpStepError, open_session
from smtp_settings.events import Kind, PoolEvent, smtp_event
from smtp_settings.limits import LocalLimits
from smtp_settings.replies import BoundedSMTP, ProtocolError

_connection_ids = itertools.count(1)
_BARE_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
CONCURRENCY_REFUSAL = re.compile(r"4\.3\.2|concurrent|too many (smtp )?(connections|sessions)", re.IGNORECASE)


@dataclass(frozen=True)
class ServerConfig:
    """A snapshot of an SmtpServer, safe to share between threads."""

    id: int | None
    name: str
    host: str
    port: int
    tls: str
    tls_skip_verify: bool
    helo_hostname: str
    auth_protocol: str
    username: str
    password: str = field(repr=False)  # decrypted: kept out of logs and error reports
    max_conns: int
    max_msgs_per_conn: int
    retries: int
    idle_timeout: int
    max_conn_age: int
    wait_timeout: int
    send_timeout: int
    rate_limit: float
    custom_headers: tuple
    learned_msgs_per_conn: int | None
    learned_max_conns: int | None

    @classmethod
    def of(cls, server) -> "ServerConfig":
        values = {f.name: getattr(server, f.name) for f in fields(cls) if f.name != "id"}
        values["custom_headers"] = tuple(tuple(pair) for pair in server.custom_headers or ())
        return cls(id=server.pk, **values)


class SessionClosed(Exception):
    """The server answered 421: the session is over. Resend on a new connection."""

    def __init__(self, stage: str, code: int, text: str):
        super().__init__(f"{code} {text} (at {stage})")
        self.stage, self.code, self.text = stage, code, text


class ConnectionLost(Exception):
    """The connection broke (reset, EOF, timeout), or the server's reply broke the protocol
    and it was closed. `after_dot`: the whole message went out and the reply never came, so
    the server may or may not have accepted it (RFC 1047)."""

    def __init__(self, stage: str, error: BaseException, after_dot: bool = False):
        super().__init__(f"{error} (at {stage})")
        self.stage, self.error, self.after_dot = stage, error, after_dot

    @property
    def protocol_error(self) -> bool:
        return isinstance(self.error, ProtocolError)

    @property
    def timed_out(self) -> bool:
        cause = self.error.__context__ if isinstance(self.error, smtplib.SMTPServerDisconnected) else self.error
        return isinstance(cause, TimeoutError)


class BeforeDotFailed(Exception):
    """The caller's `before_dot` hook raised: the message was not sent and the session, left
    mid-DATA, was closed (the server discards a transaction without its final dot)."""


class ConnectFailed(Exception):
    """A session could not be opened: refused, DNS, TLS or AUTH (not a 421)."""

    def __init__(self, error: SmtpStepError):
        super().__init__(str(error))
        self.step, self.code, self.text, self.error = error.step, error.code, error.text, error.error


class PoolTimeout(Exception):
    """No connection came free within wait_timeout."""


@dataclass
class TxResult:
    """The server's replies to one MAIL/RCPT/DATA transaction."""

    mail: tuple[int, str]
    rcpts: dict[str, tuple[int, str]]
    data: tuple[int, str] | None  # the reply to DATA if not 354, else to the final dot; None if not reached
    stage: str  # where the transaction ended: MAIL, RCPT, DATA or dot


def _mail_command(mail_from: str) -> bytes:
    return f"MAIL FROM:<{mail_from}>\r\n".encode()


def _rcpt_command(rcpt: str) -> bytes:
    return f"RCPT TO:<{rcpt}>\r\n".encode()


def _envelope(mail_from: str, recipients: list[str]) -> bytes:
    """MAIL, RCPTs and DATA as one pipelined group."""
    return b"".join([_mail_command(mail_from), *map(_rcpt_command, recipients), b"DATA\r\n"])


def prepare_data(message_bytes: bytes) -> bytes:
    """CRLF line endings, dot-stuffing and the terminating dot, as RFC 5321 §4.5.2 wants."""
    crlf = message_bytes.count(b"\r\n")
    if message_bytes.count(b"\n") == crlf == message_bytes.count(b"\r"):  # CRLF throughout, as rendered
        data = message_bytes.replace(b"\r\n.", b"\r\n..")
        data = b"." + data if data.startswith(b".") else data
    else:
        data = _LEADING_DOT.sub(b"..", _BARE_EOL.sub(b"\r\n", message_bytes))
    return data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")


class PooledConnection:
    def __init__(self, smtp: BoundedSMTP):
        self.id = next(_connection_ids)
        self.smtp = smtp
        self.opened_at = self.last_used = time.monotonic()
        self.sent = 0  # messages the server accepted on this session
        self.usable = True
        self.in_flight: tuple[str, list[str]] | None = None  # an envelope pipelined for the next message
        smtp.ends_at = math.inf  # the open's deadline is over; each reply keeps its own
        self.pipelining = smtp.has_extn("pipelining")
        limits = dict(re.findall(r"(\w+)=(\d+)", smtp.esmtp_features.get("limits", "")))
        self.mailmax = int(limits.get("MAILMAX", 0))
        self.rcptmax = int(limits.get("RCPTMAX", 0))

    def transact(self, mail_from: str, recipients: list[str], data: bytes, then=None, before_dot=None) -> TxResult:
        """One transaction; `data` comes from `prepare_data`. On a 421 or a broken link the
        connection is closed and marked unusable, and SessionClosed/ConnectionLost raised.

        `then`, the next message's (mail_from, recipients), is pipelined behind this message's
        content (RFC 2920 lets the content open a command group, as Postfix does), saving a
        round trip per message; the next transact with that envelope reads its replies
        instead of sending it. Until then the server is in DATA for it, so a connection with
        an envelope in flight must be closed, never reused for anything else.

        `before_dot()`, if given, is called just before the content and its final dot are
        written: until then the server cannot have accepted the message.

        Each reply must come whole within send_timeout, within bounds, and be one a server
        may give at that stage; otherwise the connection is closed and ConnectionLost raised
        (see `replies.py`). A bad reply to the final dot is no acceptance: the message is
        not ambiguous but not sent, as with any temporary failure."""
        smtp, stage, dot_sent = self.smtp, "MAIL", False
        try:
            if self.pipelining:  # RFC 2920: one write, then the replies in order
                if self.in_flight is None:
                    smtp.send(_envelope(mail_from, recipients))
                elif self.in_flight != (mail_from, recipients):
                    raise ConnectionError("a different envelope is in flight on this connection")
                self.in_flight = None
                mail = self._read(stage)
                stage = "RCPT"
                rcpts = {rcpt: self._read(stage) for rcpt in recipients}
                stage = "DATA"
                data_cmd = self._read(stage, go_ahead=True)
            else:
                smtp.send(_mail_command(mail_from))
                mail = self._read(stage)
                if mail[0] >= 300:
                    return self._abandon(TxResult(mail, {}, None, stage))
                stage, rcpts = "RCPT", {}
                for rcpt in recipients:
                    smtp.send(_rcpt_command(rcpt))
                    rcpts[rcpt] = self._read(stage)
                if not any(code < 300 for code, _ in rcpts.values()):
                    return self._abandon(TxResult(mail, rcpts, None, stage))
                stage = "DATA"
                smtp.send(b"DATA\r\n")
                data_cmd = self._read(stage, go_ahead=True)
            if data_cmd[0] != 354:
                return self._abandon(TxResult(mail, rcpts, data_cmd, stage))
            if mail[0] >= 300 or not any(code < 300 for code, _ in rcpts.values()):
                # Pipelined DATA was accepted with nobody to deliver to: end it empty (RFC 2920 §3.1).
                smtp.send(b".\r\n")
                return self._abandon(TxResult(mail, rcpts, self._read(stage), stage))
            stage = "dot"
            if before_dot is not None:
                try:
                    before_dot()
                except Exception as error:
                    self.close()
                    raise BeforeDotFailed(str(error)) from error
            follow = then is not None and self.pipelining
            smtp.send(data + _envelope(*then) if follow else data)
            dot_sent = True
            if follow:
                self.in_flight = then
            final = self._read(stage)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.close()
            raise ConnectionLost(stage, error, after_dot=dot_sent and not isinstance(error, ProtocolError)) from error
        # The final reply ends the transaction whatever it says: no RSET (and none may be
        # sent while another envelope is in flight: it would become message content).
        if final[0] < 300:
            self.sent += 1
        self.last_used = time.monotonic()
        return TxResult(mail, rcpts, final, stage)

    def _read(self, stage: str, go_ahead: bool = False) -> tuple[int, str]:
        """The next reply. 421 ends the session; a 3xx is a protocol error unless it is the
        354 that `go_ahead` (DATA) waits for, and only a 354 or a refusal answers DATA."""
        code, text = self.smtp.getreply()
        if code == 421:
            self.close()
            raise SessionClosed(stage, code, text.decode("utf-8", "replace"))
        if (code == 354 or code >= 400) if go_ahead else not 300 <= code < 400:
            return code, text.decode("utf-8", "replace")
        raise ProtocolError(f"the server answered {stage} with {code}, which is no reply to it")

    def _abandon(self, result: TxResult) -> TxResult:
        """A failed transaction: reset the session so the next one starts clean."""
        try:
            self.smtp.send(b"RSET\r\n")
            if self.smtp.getreply()[0] != 250:
                self.close()
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
        self.last_used = time.monotonic()
        return result

    def quit(self) -> None:
        if self.usable:
            try:
                self.smtp.reply_timeout_s = min(self.smtp.reply_timeout_s, 5)
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self.close()

    def close(self) -> None:
        self.usable = False
        self.smtp.close()


class ConnectionPool:
    """Connections to one server, shared by every thread of this process (see module docstring)."""

    LEARN_MARGIN = 0.9  # adopt a cap this fraction of the smallest session length seen
    LEARN_AFTER_SESSIONS = 2  # sessions that must end early, alike, before a cap is adopted
    MAX_421_IN_A_ROW = 5  # consecutive 421s before a message is left deferred

    def __init__(self, config: ServerConfig, limits=None, probe_interval_s: float = 60.0):
        self.config = config
        self.limits = limits or LocalLimits(config.max_conns, config.rate_limit, config.learned_max_conns)
        self.probe_interval_s = probe_interval_s
        self.learned_cap = config.learned_msgs_per_conn
        self._unrecorded: dict[str, int] = {}  # learned limits not yet written to the server row
        self._session_lengths: list[int] = []
        self._idle: list[PooledConnection] = []
        self._greeted = 0  # open connections the server greeted with 220
        self._last_refusal_at = time.monotonic()
        self._cond = threading.Condition()
        self._closed = False
        self._reaper = None
        if config.idle_timeout:
            self._reaper = threading.Thread(target=self._reap_idle, name=f"smtp-pool-{config.name}", daemon=True)
            self._reaper.start()

    # -- events --

    def emit(self, kind: str, conn: PooledConnection | None = None, context: dict | None = None, **fields) -> None:
        if conn is not None:
            fields.setdefault("connection_id", conn.id)
            fields.setdefault("messages_on_connection", conn.sent)
        event = PoolEvent(
            kind=kind, server_id=self.config.id, server_name=self.config.name, context=context or {}, **fields
        )
        smtp_event.send(sender=ConnectionPool, event=event)

    # -- caps --

    def msgs_cap(self, conn: PooledConnection) -> int:
        """Messages this connection may carry, 0 for no cap."""
        caps = [cap for cap in (self.config.max_msgs_per_conn, self.learned_cap, conn.mailmax) if cap]
        return min(caps) if caps else 0

    # -- checkout and checkin --

    def checkout(self, context: dict | None = None) -> PooledConnection:
        """A usable connection: an idle one, or a new one if the ceiling allows.

        Raises PoolTimeout after wait_timeout, SessionClosed if the server answers 421 while
        the session opens, and ConnectFailed for any other failure to open one."""
        wait_s = self.config.wait_timeout
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                opened = self.limits.try_open()
                remaining = deadline - time.monotonic()
                if opened or remaining <= 0:
                    break
                self._cond.wait(remaining)
        if not opened:
            self.emit(Kind.POOL_WAIT_TIMEOUT, context=context, detail={"wait_timeout": wait_s})
            raise PoolTimeout(f"no free connection to {self.config.name} within {wait_s} s")
        try:
            return self._open(context)
        except BaseException:
            self._release_slot()
            raise

    def _open(self, context: dict | None) -> PooledConnection:
        started = time.monotonic()
        steps = []

        def on_step(step):
            steps.append(step)
            if step.name == "connect" and step.ok:
                with self._cond:
                    self._greeted += 1

        try:
            smtp = open_session(self.config, Deadline(self.config.send_timeout), on_step=on_step)
        except SmtpStepError as error:
            if steps and steps[0].ok:
                with self._cond:
                    self._greeted -= 1
            if error.code == 421:
                self._refused_with_421(error, context)
                raise SessionClosed(error.step, error.code, error.text) from error
            self.emit(
                Kind.CONNECT_FAILED,
                context=context,
                stage=error.step,
                code=error.code,
                text=error.text or str(error.error),
                duration_s=time.monotonic() - started,
            )
            raise ConnectFailed(error) from error
        conn = PooledConnection(smtp)
        self.emit(
            Kind.CONNECT,
            conn,
            context,
            stage="connect",
            code=steps[0].code,
            text=steps[0].text,
            duration_s=time.monotonic() - started,
            detail={
                "tls": self.config.tls,
                "auth": self.config.auth_protocol,
                "pipelining": conn.pipelining,
                "mailmax": conn.mailmax,
                "rcptmax": conn.rcptmax,
            },
        )
        return conn

    def checkin(self, conn: PooledConnection, context: dict | None = None) -> None:
        """Return a connection after use: idle it, or close it if it is spent, dead or surplus."""
        if not conn.usable or conn.in_flight:
            self._discard(conn)  # closed without QUIT: a server in DATA discards what it has
            return
        cap = self.msgs_cap(conn)
        if cap and conn.sent >= cap:
            self.emit(Kind.ROTATION, conn, context, detail={"cap": cap})
            self._discard(conn, quit=True)
        elif self.config.max_conn_age and time.monotonic() - conn.opened_at >= self.config.max_conn_age:
            self.emit(Kind.AGE_CLOSE, conn, context, detail={"max_conn_age": self.config.max_conn_age})
            self._discard(conn, quit=True)
        elif self._closed or self.limits.open_count() > self.limits.ceiling():
            self._discard(conn, quit=True)
        else:
            with self._cond:
                self._idle.append(conn)
                self._cond.notify()
        self._maybe_probe_upward(context)

    def _discard(self, conn: PooledConnection, quit: bool = False) -> None:
        if quit:
            conn.quit()
        else:
            conn.close()
        with self._cond:
            self._greeted -= 1
        self._release_slot()

    def _release_slot(self) -> None:
        self.limits.closed()
        with self._cond:
            self._cond.notify()

    # -- learning from the server --

    def session_closed(self, conn: PooledConnection, error: SessionClosed, context: dict | None = None) -> None:
        """A 421 ended a session that was carrying messages; learn its cap if it has one."""
        self.emit(Kind.SESSION_CLOSED_421, conn, context, stage=error.stage, code=error.code, text=error.text)
        configured = self.config.max_msgs_per_conn
        if error.stage != "MAIL" or conn.sent == 0 or (configured and configured <= conn.sent):
            return
        with self._cond:
            self._session_lengths.append(conn.sent)
            if len(self._session_lengths) < self.LEARN_AFTER_SESSIONS:
                return
            cap = max(1, int(min(self._session_lengths) * self.LEARN_MARGIN))
            if self.learned_cap and self.learned_cap <= cap:
                return
            self.learned_cap = cap
        self.emit(
            Kind.LEARNED_LIMIT,
            conn,
            context,
            code=error.code,
            text=error.text,
            detail={"limit": "msgs_per_conn", "value": cap, "session_lengths": sorted(set(self._session_lengths))},
        )
        with self._cond:
            self._unrecorded["msgs_per_conn"] = cap

    def _refused_with_421(self, error: SmtpStepError, context: dict | None) -> None:
        """The server refused a new session. If it says it is about concurrency, or others of
        ours are open, lower the ceiling to what it accepted (Postfix's concurrency feedback)."""
        self.emit(Kind.SESSION_CLOSED_421, context=context, stage=error.step, code=error.code, text=error.text)
        with self._cond:
            self._last_refusal_at = time.monotonic()
            accepted = self._greeted
        if accepted == 0 and not CONCURRENCY_REFUSAL.search(error.text):
            return
        if accepted and accepted < self.limits.ceiling():
            self.limits.set_ceiling(accepted)
            self.emit(
                Kind.LEARNED_LIMIT,
                context=context,
                stage=error.step,
                code=error.code,
                text=error.text,
                detail={"limit": "max_conns", "value": accepted},
            )
            with self._cond:
                self._unrecorded["max_conns"] = accepted

    def take_learned(self) -> dict[str, int]:
        """Learned limits since the last call, for the caller to record in its own thread."""
        with self._cond:
            learned, self._unrecorded = self._unrecorded, {}
        return learned

    def _maybe_probe_upward(self, context: dict | None) -> None:
        """After a quiet spell with no refusals, allow one more connection again."""
        ceiling = self.limits.ceiling()
        if ceiling >= self.config.max_conns or time.monotonic() - self._last_refusal_at < self.probe_interval_s:
            return
        with self._cond:
            self._last_refusal_at = time.monotonic()
        self.limits.set_ceiling(ceiling + 1)
        self.emit(Kind.CONCURRENCY_RAISED, context=context, detail={"value": ceiling + 1})

    # -- housekeeping --

    def _reap_idle(self) -> None:
        timeout = self.config.idle_timeout
        while not self._closed:
            now = time.monotonic()
            with self._cond:
                expired = [conn for conn in self._idle if now - conn.last_used >= timeout]
                self._idle = [conn for conn in self._idle if conn not in expired]
                oldest = min((conn.last_used for conn in self._idle), default=now)
            for conn in expired:
                self.emit(Kind.IDLE_CLOSE, conn, detail={"idle_timeout": timeout})
                self._discard(conn, quit=True)
            with self._cond:
                if not self._closed:
                    self._cond.wait(max(0.05, min(timeout, oldest + timeout - time.monotonic())))

    def idle_count(self) -> int:
        with self._cond:
            return len(self._idle)

    def close(self) -> None:
        """Close idle connections now; busy ones close when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for conn in idle:
            self._discard(conn, quit=True)


_pools: dict[int, tuple[object, ConnectionPool]] = {}
_pools_lock = threading.Lock()


def get_pool(server) -> ConnectionPool:
    """The process-wide pool for a saved SmtpServer, rebuilt when its settings change."""
    version = server.updated_at
    with _pools_lock:
        known = _pools.get(server.pk)
        if known and known[0] == version:
            return known[1]
        pool = ConnectionPool(ServerConfig.of(server))
        _pools[server.pk] = (version, pool)
    if known:
        known[1].close()
    return pool


def close_all_pools() -> None:
    with _pools_lock:
        pools = [pool for _, pool in _pools.values()]
        _pools.clear()
    for pool in pools:
        pool.close()
