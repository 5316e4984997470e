"""A pool of SMTP connections to one server that keeps the server's limits, and the
process-wide registry of pools (`get_pool`, `close_all_pools`).

Guarantees:
- At most `Limits.ceiling()` connections are open (the server's max_conns, or fewer once
  the server has refused connections); a caller waits up to `wait_timeout` for one.
- A connection carries at most the effective per-connection cap of messages (max_msgs_per_conn,
  the server's RFC 9422 MAILMAX, or a cap learned from the server's 421s), then is closed with
  QUIT. Connections idle for `idle_timeout` or older than `max_conn_age` are closed too.
- A connection that saw a 421, a network error, a reply out of bounds or syntax (`replies.py`)
  or a failed RSET is never used again: smtplib closes its socket on some of these, and a
  session the server gave up on is gone either way.
- Every notable thing is reported as a `PoolEvent` through `smtp_event`. An SMTP connection's
  events carry its id; its life is a `connect`, then one of `CONNECTION_ENDS` (events.py).
  Events of a connection that no caller is using (an idle close) carry the context of the
  caller that used it last.

For an ESP entry (esp/) the pool lends out API sessions (`EspConnection`) instead of SMTP
sessions, under the same ceiling, shares, rates and quotas; nothing is opened until a call.

Counting slots and pacing messages is the pool's `Limits` (`limits.py`); what the server's
421s teach about its limits, its `LimitLearner` (`learning.py`). Sending one message on a
connection it lent out is `PooledConnection.transact` (`transaction.py`).
"""

import random
import threading
import time
from dataclasses import dataclass, field, fields

from django.conf import settings

from smtp_settings.connection import Deadline, SmtpStepError, open_session
from smtp_settings.esp.client import EspConnection
from smtp_settings.events import CONNECTION_ENDS, Kind, PoolEvent, smtp_event
from smtp_settings.learning import LimitLearner
from smtp_settings.limits import Limits, LocalLimits
from smtp_settings.shared_limits import SharedLimits
from smtp_settings.transaction import PooledConnection, SessionClosed


@dataclass(frozen=True)
class ServerConfig:
    """A snapshot of an SmtpServer, safe to share between threads."""

    id: int | None
    name: str
    enabled: bool
    kind: str
    esp: str
    esp_credentials: str = field(repr=False)  # decrypted JSON: kept out of logs and error reports
    api_url: str
    max_batch: int | None
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
    rate_per_minute: int
    rate_counts: str
    quota_per_hour: int
    quota_per_day: int
    quota_counts: str
    custom_headers: tuple
    bounce_domain: str
    learned_msgs_per_conn: int | None
    learned_max_conns: int | None

    @classmethod
    def of(cls, server) -> "ServerConfig":
        values = {f.name: getattr(server, f.name) for f in fields(cls) if f.name != "id"}
        values["custom_headers"] = tuple(tuple(pair) for pair in server.custom_headers or ())
        return cls(id=server.pk, **values)


class ConnectFailed(Exception):
    """A session could not be opened: refused, DNS, TLS or AUTH (not a 421)."""

    def __init__(self, error: SmtpStepError):
        super().__init__(str(error))
        self.step, self.code, self.text, self.error = error.step, error.code, error.text, error.error


class PoolTimeout(Exception):
    """No connection came free within wait_timeout."""


class ConnectionPool:
    """Connections to one server, shared by every thread of this process (see module docstring)."""

    MAX_421_IN_A_ROW = 5  # consecutive 421s before a message is left deferred

    def __init__(self, config: ServerConfig, limits: Limits | None = None, probe_interval_s: float = 60.0):
        self.config = config
        self.limits = limits or self._limits_for(config)
        self.learner = LimitLearner(
            self.limits,
            max_conns=config.max_conns,
            max_msgs_per_conn=config.max_msgs_per_conn,
            msgs_per_conn=config.learned_msgs_per_conn,
            probe_interval_s=probe_interval_s,
        )
        self._idle: list[PooledConnection] = []
        self._greeted = 0  # open connections the server greeted with 220
        self._cond = threading.Condition()
        self._closed = False
        self._reaper = None
        if config.idle_timeout:
            self._reaper = threading.Thread(target=self._reap_idle, name=f"smtp-pool-{config.name}", daemon=True)
            self._reaper.start()

    def _limits_for(self, config: ServerConfig) -> Limits:
        """Cluster-wide limits for a saved server (unless SMTP_SHARED_LIMITS is off)."""
        if config.id is None or not settings.SMTP_SHARED_LIMITS:
            return LocalLimits(config.max_conns, config.rate_limit, config.learned_max_conns)
        limits = SharedLimits(config, emit=self.emit)
        limits.on_over_share = self._trim
        return limits

    # -- events --

    def emit(self, kind: str, conn: PooledConnection | None = None, context: dict | None = None, **fields) -> None:
        if conn is not None:
            fields.setdefault("connection_id", conn.id)
            fields.setdefault("messages_on_connection", conn.sent)
            context = context or conn.context
            conn.ended = conn.ended or kind in CONNECTION_ENDS
        event = PoolEvent(
            kind=kind, server_id=self.config.id, server_name=self.config.name, context=context or {}, **fields
        )
        smtp_event.send(sender=ConnectionPool, event=event)

    # -- caps --

    def msgs_cap(self, conn: PooledConnection) -> int:
        """Messages this connection may carry, 0 for no cap."""
        caps = [cap for cap in (self.config.max_msgs_per_conn, self.learner.msgs_per_conn, conn.mailmax) if cap]
        return min(caps) if caps else 0

    # -- checkout and checkin --

    def checkout(self, context: dict | None = None) -> PooledConnection:
        """A usable connection: an idle one, or a new one if the ceiling allows.

        Raises PoolTimeout after wait_timeout, SessionClosed if the server answers 421 while
        the session opens, and ConnectFailed for any other failure to open one."""
        wait_s = self.config.wait_timeout
        deadline = time.monotonic() + wait_s
        while True:
            with self._cond:
                conn = self._idle.pop() if self._idle else None
                if conn is None:
                    slot = self.limits.try_open()
                    remaining = deadline - time.monotonic()
                    if slot is None and remaining > 0:
                        # A slot may come free in another process, which cannot wake us: look again soon.
                        self._cond.wait(min(remaining, random.uniform(0.05, 0.15)))
                        continue
            if conn is None:
                break
            if self.limits.keep(conn.slot):
                conn.context = context or {}
                return conn
            # Its slot was lost (this process was stopped), or is beyond our share.
            self._discard(conn, "surplus", quit=True)
        if slot is None:
            self.emit(Kind.POOL_WAIT_TIMEOUT, context=context, detail={"wait_timeout": wait_s})
            raise PoolTimeout(f"no free connection to {self.config.name} within {wait_s} s")
        try:
            return self._open(context, slot)
        except BaseException:
            self._release_slot(slot)
            raise

    def _open(self, context: dict | None, slot: object) -> PooledConnection | EspConnection:
        if self.config.kind == "esp":  # an API session: nothing to open until the first call
            with self._cond:
                self._greeted += 1
            return EspConnection(self.config, slot)
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
        conn = PooledConnection(smtp, slot)
        conn.context = context or {}
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
            self._discard(conn, "broken off")  # closed without QUIT: a server in DATA discards what it has
            return
        cap = self.msgs_cap(conn)
        if cap and conn.sent >= cap:
            self.emit(Kind.ROTATION, conn, context, detail={"cap": cap})
            self._discard(conn, "rotation", quit=True)
        elif self.config.max_conn_age and time.monotonic() - conn.opened_at >= self.config.max_conn_age:
            self.emit(Kind.AGE_CLOSE, conn, context, detail={"max_conn_age": self.config.max_conn_age})
            self._discard(conn, "age", quit=True)
        elif self._closed:
            self._discard(conn, "shutdown", quit=True)
        elif not self.limits.keep(conn.slot):  # surplus: a lower ceiling, or our share
            self._discard(conn, "surplus", quit=True)
        else:
            with self._cond:
                self._idle.append(conn)
                self._cond.notify()
        if (raised_to := self.learner.maybe_probe_upward()) is not None:
            self.emit(Kind.CONCURRENCY_RAISED, context=context, detail={"value": raised_to})

    def _discard(self, conn: PooledConnection, reason: str, quit: bool = False) -> None:
        """Close a connection; if no event has said how it ended, a `close` with `reason`."""
        if isinstance(conn, PooledConnection) and not conn.ended:
            self.emit(Kind.CLOSE, conn, detail={"reason": reason})
        if quit:
            conn.quit()
        else:
            conn.close()
        with self._cond:
            self._greeted -= 1
        self._release_slot(conn.slot)

    def _release_slot(self, slot: object) -> None:
        self.limits.closed(slot)
        with self._cond:
            self._cond.notify()

    def _trim(self) -> None:
        """Close idle connections the limits no longer let us keep (called by SharedLimits'
        heartbeat when a ceiling was lowered, another process waits, or slots were lost),
        one at a time: each one closed may be the one that brings us within our share."""
        while True:
            with self._cond:
                surplus = next((conn for conn in self._idle if not self.limits.keep(conn.slot, idle=True)), None)
                if surplus is None:
                    return
                self._idle.remove(surplus)
            self._discard(surplus, "surplus", quit=True)

    def throttled(self, conn: PooledConnection | None, code: int, text: str, context: dict | None = None) -> None:
        """The server answered with a throttle reply: lower the rate for everyone sending to it."""
        rate = self.limits.throttled()
        if rate is not None:
            self.emit(Kind.THROTTLED, conn, context, code=code, text=text, detail={"rate": round(rate, 3)})

    # -- learning from the server --

    def session_closed(self, conn: PooledConnection, error: SessionClosed, context: dict | None = None) -> None:
        """A 421 ended a session that was carrying messages; learn its cap if it has one."""
        self.emit(Kind.SESSION_CLOSED_421, conn, context, stage=error.stage, code=error.code, text=error.text)
        cap = self.learner.session_ended(error.stage, conn.sent)
        if cap is None:
            return
        self.emit(
            Kind.LEARNED_LIMIT,
            conn,
            context,
            code=error.code,
            text=error.text,
            detail={"limit": "msgs_per_conn", "value": cap, "session_lengths": self.learner.session_lengths()},
        )

    def _refused_with_421(self, error: SmtpStepError, context: dict | None) -> None:
        """The server refused a new session: the learner may lower the ceiling to the sessions
        it accepted."""
        self.emit(Kind.SESSION_CLOSED_421, context=context, stage=error.step, code=error.code, text=error.text)
        with self._cond:
            accepted = self._greeted  # ours greeted, and every other process's open or opening
        accepted += self.limits.open_elsewhere()
        ceiling = self.learner.refused(accepted, error.text)
        if ceiling is not None:
            self.emit(
                Kind.LEARNED_LIMIT,
                context=context,
                stage=error.step,
                code=error.code,
                text=error.text,
                detail={"limit": "max_conns", "value": ceiling},
            )

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
                self._discard(conn, "idle", quit=True)
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
            self._discard(conn, "shutdown", quit=True)
        self.limits.retire()


_pools: dict[int, tuple[object, ConnectionPool]] = {}
_pools_lock = threading.Lock()


def get_pool(server) -> ConnectionPool:
    """The process-wide pool for a saved SmtpServer, rebuilt when its settings change."""
    version = server.updated_at
    with _pools_lock:
        known = _pools.get(server.pk)
        if known and known[0] == version:
            known[1].learner.adopt(server.learned_msgs_per_conn)  # learned by another process, maybe
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
