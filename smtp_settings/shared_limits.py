"""Keeping a server's limits for the whole cluster: every process on every host.

`SharedLimits` is the `Limits` (limits.py) of a pool for a saved server. It keeps in the
store (limit_stores.py: Redis, or the database):
- Connection slots. Each open connection holds a numbered slot, a lease renewed every third
  of SMTP_SLOT_LEASE_S while this process lives. A process that dies gives its slots back at
  once if it was on this host (a waiting process sees its pid is gone), else when the lease
  runs out. A process whose slots ran out while it was stopped closes those connections after
  their current message.
- Fair shares. When another process waits for a connection, each process keeps at most its
  share of the ceiling (ceiling / processes, the remainder rotating every SHARE_TURN_S),
  closes connections beyond it after their current message, and closes idle ones.
- Rates (per second, per minute) as one pacing time per server: every message has its
  turn, whichever process sends it (a process reserves 50 ms of its turns at a time). A
  throttle reply ("454 Throttling failure", say) halves the rate for the cluster; it rises
  again by a quarter after every SMTP_THROTTLE_RECOVERY_S without one.
- Quotas (per hour, per day) in rolling windows: a message goes only if every window has
  room, else `MustWait` says until when. Waiting, never deferring nor exceeding.
- A learned ceiling and the time of the last refusal, so one learning holds for every process
  and one process probes upward at a time.

`Heartbeat`, one thread per process, renews the slots, reads the shared state, the shares and
the server's settings once a second: an edit (a lower max_conns, a rate, disabling the
server) is obeyed within about a second, surplus connections closing after their message.
"""

import contextlib
import logging
import threading
import time
import weakref
from dataclasses import replace

from django import db
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from smtp_settings import processes
from smtp_settings.events import Kind
from smtp_settings.limit_stores import STORE_ERRORS, Figures, State, Window, store
from smtp_settings.limits import MustWait

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
SHARE_TURN_S = 10  # with more processes than connections, who gets the remainder turns this often
WAIT_NOTE_S = 3.0  # a waiting process's demand lasts this long unless noted again
THROTTLE_HOLD_S = 10.0  # throttle replies within this long of a change lower the rate once (in flight already)
THROTTLE_FLOOR = 0.1  # units a second: a throttled rate goes no lower
THROTTLE_STEP_UP = 1.25
STORE_RETRY_S = 5.0  # a batch that could not reach the store waits this long
SENT_FLUSH_S = 1.0
FULL_RECHECK_S = 0.05
TURNS_AHEAD_S = 0.05  # a process reserves up to what it uses in this long of a server's rate at a time
TURN_SLACK_S = 0.01  # a reserved turn this far in the past is dropped, not used late


def windows_of(server) -> list[Window]:
    """The server's quota windows, with the lengths in settings (an hour and a day)."""
    spans = {"hour": settings.SMTP_QUOTA_HOUR_S, "day": settings.SMTP_QUOTA_DAY_S}
    quotas = {"hour": server.quota_per_hour, "day": server.quota_per_day}
    return [Window(name, spans[name], quota) for name, quota in quotas.items() if quota]


def figures(server) -> Figures:
    """Live, cluster-wide figures for the server card."""
    return store().figures(server.pk, windows_of(server), time.time())


def open_connections(server) -> int:
    """Connections open to the server now, from every process (`figures().open`, alone)."""
    return sum(store().holders(server.pk, time.time()).values())


def configured_rate(config) -> float:
    """Units a second the server's rates allow, the stricter if both are set; 0 for no rate."""
    rates = [rate for rate in (config.rate_limit, config.rate_per_minute / 60) if rate > 0]
    return min(rates) if rates else 0.0


def rate_per_minute(server) -> float | None:
    """The configured rates as units a minute; None: unlimited."""
    return configured_rate(server) * 60 or None


def effective_ceiling(config, state: State) -> int:
    """The most connections open to the server at once: the configured number, or less while
    the server refuses more (lowered cluster-wide, else as learned and recorded)."""
    learned = state.ceiling or config.learned_max_conns or config.max_conns
    return max(1, min(config.max_conns, learned))


def forget_learned(server_id: int) -> bool:
    """Drop what the cluster learned about the server's limits (a lowered connection ceiling,
    a throttled rate), as if its pools had never met a 421 or a throttle reply. False if a
    throttle reply lowered the rate again meanwhile (then that stays). Raises STORE_ERRORS."""
    now = time.time()
    limit_store = store()
    limit_store.set_ceiling(server_id, None)
    return limit_store.set_throttle(server_id, None, unchanged_since=now, now=now)


@receiver(post_delete, sender="smtp_settings.SmtpServer", dispatch_uid="smtp_settings.shared_limits.forget")
def _forget_deleted_server(sender, instance, **kwargs) -> None:
    server_id = instance.pk
    transaction.on_commit(lambda: store().forget(server_id))


class SharedLimits:
    """The cluster-wide limits of one server, as seen from this process (see module docstring)."""

    def __init__(self, config, emit):
        self.config = config
        self.server_id = config.id
        self.owner = processes.me()
        self.emit = emit  # the pool's, for throttle events
        self.retired: str | None = None  # set when the server is disabled or deleted
        self._seen_saved = False  # the heartbeat has read the server's row
        self._retiring = False
        self._trimming = False
        self.on_over_share = None  # the pool's: close idle connections beyond the share
        self._store = store()
        self._slots: set[int] = set()
        self._lost: set[int] = set()
        try:
            self._state = self._store.state(self.server_id)
        except STORE_ERRORS:  # the heartbeat reads it again
            self._state = State()
        self._share = config.max_conns
        self._others_waiting = False
        self._open = 0  # cluster-wide, as of the last heartbeat
        self._renewed_at = time.monotonic()
        self._last_wait_note = self._last_reclaim = 0.0
        self._full_until = 0.0  # waiting threads of this process ask the store once per FULL_RECHECK_S
        self._turns = (0.0, 0.0, 0.0)  # reserved turns not handed out yet: (next, end, at rate)
        self._demand = (0, 0.0, 0.0)  # (second, units asked in it, units asked in the one before)
        self._turns_lock = threading.Lock()
        self._unflushed, self._flushed_at = 0, time.monotonic()
        self._lock = threading.Lock()
        heartbeat().add(self)

    # -- connections --

    def ceiling(self) -> int:
        return effective_ceiling(self.config, self._state)

    def set_ceiling(self, conns: int) -> None:
        ceiling = max(1, min(self.config.max_conns, conns))
        self._store.set_ceiling(self.server_id, ceiling)
        self._state = replace(self._state, ceiling=ceiling)

    def try_open(self) -> int | None:
        with self._lock:
            if self._others_waiting and len(self._slots) >= self._share:
                return None  # leave the next one to a process below its share
            if time.monotonic() < self._full_until:
                return None  # the store said "full" a moment ago: spare it the question
        now = time.time()
        try:
            number = self._store.take_slot(
                self.server_id, self.owner, self.ceiling(), now + settings.SMTP_SLOT_LEASE_S, now
            )
            if number is None and self._reclaim_from_the_dead(now):
                number = self._store.take_slot(
                    self.server_id, self.owner, self.ceiling(), now + settings.SMTP_SLOT_LEASE_S, now
                )
        except STORE_ERRORS:  # no slot without the store: the caller waits, and times out untried
            log.warning("server %s: could not take a connection slot", self.server_id, exc_info=True)
            number = None
        if number is None:
            self._full_until = time.monotonic() + FULL_RECHECK_S
            with contextlib.suppress(*STORE_ERRORS):
                self._note_waiting(now)
            return None
        with self._lock:
            self._slots.add(number)
        return number

    def _reclaim_from_the_dead(self, now: float) -> bool:
        """Slots held by processes of this host that have exited are free at once."""
        if now - self._last_reclaim < 1.0:
            return False
        self._last_reclaim = now
        dead = [owner for owner in self._store.holders(self.server_id, now) if processes.is_gone(owner)]
        for owner in dead:
            log.warning("server %s: freeing the connection slots of %s, which has exited", self.server_id, owner)
            self._store.drop_owner(owner)
        return bool(dead)

    def _note_waiting(self, now: float) -> None:
        if now - self._last_wait_note >= WAIT_NOTE_S / 3:
            self._last_wait_note = now
            self._store.note_demand(self.server_id, self.owner, True, now + WAIT_NOTE_S)

    def closed(self, slot: int) -> None:
        with self._lock:
            self._slots.discard(slot)
            retired = self._retiring and not self._slots
            if slot in self._lost:
                self._lost.discard(slot)
                slot = None  # expired while we were away: possibly someone else's by now
        if slot is not None:
            try:
                self._store.give_slot(self.server_id, self.owner, slot)
            except STORE_ERRORS:  # no longer renewed: it runs out within the lease
                log.warning("server %s: could not give slot %s back", self.server_id, slot, exc_info=True)
        if retired:
            heartbeat().discard(self)

    def keep(self, slot: int, idle: bool = False) -> bool:
        with self._lock:
            if slot in self._lost or self.retired or (idle and self._others_waiting):
                return False
            return not self._over_share()

    def _over_share(self) -> bool:
        """More connections than our share while another process waits, or while the cluster
        is over the ceiling (it was lowered)."""
        mine = len(self._slots)
        ceiling = self.ceiling()
        return mine > min(self._share, ceiling) and (self._others_waiting or self._open > ceiling or mine > ceiling)

    def open_elsewhere(self) -> int:
        holders = self._store.holders(self.server_id, time.time())
        return sum(count for owner, count in holders.items() if owner != self.owner)

    def share(self) -> int:
        """Connections this process may hold now."""
        with self._lock:
            return min(self._share, self.ceiling())

    # -- learning --

    def note_refusal(self) -> None:
        self._store.note_refusal(self.server_id, time.time())

    def claim_probe(self, quiet_s: float) -> bool:
        return self._store.claim_probe(self.server_id, quiet_s, time.time())

    # -- messages --

    def wait_to_send(self, recipients: int = 1) -> None:
        if self.retired:
            raise MustWait(self.retired, None)
        try:
            send_at, units = self._take_turn(recipients)
        except STORE_ERRORS as error:  # nothing may go uncounted: the batch waits a little
            log.warning("server %s: the shared limits are out of reach", self.server_id, exc_info=True)
            reason = f"not sent: the shared limits are out of reach ({type(error).__name__})"
            raise MustWait(reason, time.time() + STORE_RETRY_S) from error
        now = time.time()
        if send_at > now:
            time.sleep(send_at - now)
        with contextlib.suppress(*STORE_ERRORS):  # only the card's figure
            self._count_sent(units)

    def _take_turn(self, recipients: int) -> tuple[float, int]:
        """Count the message in the quotas (MustWait if one is full) and reserve its turn at
        the rate; returns when the turn is and the units the rate counted."""
        if time.monotonic() - self._renewed_at > settings.SMTP_SLOT_LEASE_S * 2 / 3:
            self._renew(time.time())  # the heartbeat is late (this process was stopped?): which slots are ours
        config = self.config
        now = time.time()
        windows = windows_of(config)
        if windows:
            units = recipients if config.quota_counts == "recipients" else 1
            full = self._store.take_quota(self.server_id, units, windows, now)
            if full is not None:
                raise MustWait(self._quota_reason(full), full.free_at)
        units = recipients if config.rate_counts == "recipients" else 1
        rate = self.rate()
        return (self._turn(units / rate, rate, now) if rate else now), units

    def _turn(self, need_s: float, rate: float, now: float) -> float:
        """When a message needing `need_s` of the rate's time may go. Turns are reserved in
        the store in blocks of what this process uses in TURNS_AHEAD_S (one turn at low
        rates, at most TURNS_AHEAD_S of the rate) and handed out here in order, so the
        cluster's spacing is exactly as if each were reserved alone: unused turns are lost,
        never used twice, and stale ones are dropped."""
        with self._turns_lock:
            demand = self._demand_per_s(need_s * rate, now)
            start, end, block_rate = self._turns
            if block_rate != rate or start < now - TURN_SLACK_S or start + need_s > end:
                # As many turns as this process used in TURNS_AHEAD_S lately: a block it will
                # not use up holds the others back for nothing.
                block_s = max(need_s, min(TURNS_AHEAD_S, demand * TURNS_AHEAD_S / rate))
                start = self._store.reserve(self.server_id, block_s, now)
                end = start + block_s
            self._turns = (start + need_s, end, rate)
            return start

    def _demand_per_s(self, units: float, now: float) -> float:
        """Units this process asked for in the last whole second (counting `units` now)."""
        second = int(now)
        counted_second, count, previous = self._demand
        if second != counted_second:
            previous = count if second == counted_second + 1 else 0.0
            counted_second, count = second, 0.0
        self._demand = (counted_second, count + units, previous)
        return previous

    def _quota_reason(self, full) -> str:
        per = {"hour": "hourly", "day": "daily"}[full.window]
        unit = self.config.quota_counts
        if full.free_at is None:
            return f"a message to more {unit} than {self.config.name}'s {per} quota ({full.quota:,}) allows"
        return f"waiting for {self.config.name}'s {per} quota: {full.used:,} of {full.quota:,} {unit} used"

    def rate(self) -> float:
        """Units a second, cluster-wide, now (0: no rate): the configured one, or lower after
        throttle replies."""
        configured = configured_rate(self.config)
        throttled = self._state.throttled_rate
        if throttled is None:
            return configured
        return min(configured, throttled) if configured else throttled

    def _count_sent(self, units: int) -> None:
        with self._lock:
            self._unflushed += units
            due = time.monotonic() - self._flushed_at >= SENT_FLUSH_S
        if due:
            self.flush_sent()

    def flush_sent(self) -> None:
        with self._lock:
            units, self._unflushed, self._flushed_at = self._unflushed, 0, time.monotonic()
        if units:
            self._store.count_sent(self.server_id, units, time.time())

    def throttled(self) -> float | None:
        now = time.time()
        try:
            state = self._store.state(self.server_id)
            current = state.throttled_rate or configured_rate(self.config) or self._recent_rate(now)
            lowered = max(THROTTLE_FLOOR, current / 2)
            if not self._store.set_throttle(self.server_id, lowered, now - THROTTLE_HOLD_S, now):
                return None
        except STORE_ERRORS:  # the message is retried anyway; the next throttle reply tries again
            log.warning("server %s: could not lower the rate", self.server_id, exc_info=True)
            return None
        self._state = replace(state, throttled_rate=lowered, throttled_at=now)
        return lowered

    def _recent_rate(self, now: float) -> float:
        """What the cluster sent in the last minute, a second (for a server with no rate set)."""
        sent = self._store.figures(self.server_id, [], now).sent_last_minute
        return max(1.0, sent / 60)

    # -- the heartbeat's rounds --

    def beat(self, config, now: float) -> None:
        """Once a second: the server's settings as saved (None: not found, deleted if it was
        found before), the shared state, the shares; slot renewal every third of the slot lease."""
        if config is not None:
            self.config, self._seen_saved = config, True
            self.retired = None if config.enabled else f"not sent: SMTP server “{config.name}” is disabled"
        elif self._seen_saved:  # (a row never seen may be one not committed yet)
            self.retired = f"not sent: SMTP server “{self.config.name}” was deleted"
        self._state = self._store.state(self.server_id)
        self._recover_throttle(now)
        holders = self._store.holders(self.server_id, now)
        waiting = self._store.demand(self.server_id, now)
        owners = sorted(set(holders) | set(waiting) | {self.owner})
        ceiling = self.ceiling()
        turn = int(now // SHARE_TURN_S) % len(owners)
        place = (owners.index(self.owner) - turn) % len(owners)
        with self._lock:
            self._open = sum(holders.values())
            self._others_waiting = any(waiting.get(owner) for owner in owners if owner != self.owner)
            self._share = ceiling // len(owners) + (place < ceiling % len(owners))
            over = self._over_share() or self.retired or self._lost or self._others_waiting
        if over:
            self._trim_aside()
        if time.monotonic() - self._renewed_at >= settings.SMTP_SLOT_LEASE_S / 3:
            self._renew(now)
        if self._unflushed and time.monotonic() - self._flushed_at >= 2 * SENT_FLUSH_S:
            self.flush_sent()

    def _renew(self, now: float) -> None:
        with self._lock:
            slots = [(self.server_id, number) for number in self._slots if number not in self._lost]
        held = self._store.renew(self.owner, slots, now + settings.SMTP_SLOT_LEASE_S)
        self._renewed_at = time.monotonic()
        lost = {number for _, number in slots} - {number for _, number in held}
        if lost:
            log.warning("server %s: %s connection slots ran out while this process was away", self.server_id, len(lost))
            with self._lock:
                self._lost |= lost & self._slots
            self._trim_aside()

    def _trim_aside(self) -> None:
        """Have the pool close what it may not keep, in a thread of its own: closing says QUIT
        and waits for the reply, which must never hold up the heartbeat."""
        with self._lock:
            if self.on_over_share is None or self._trimming:
                return
            self._trimming = True

        def trim():
            try:
                self.on_over_share()
            finally:
                self._trimming = False

        threading.Thread(target=trim, name=f"smtp-trim-{self.server_id}", daemon=True).start()

    def _recover_throttle(self, now: float) -> None:
        state = self._state
        if state.throttled_rate is None or now - state.throttled_at < settings.SMTP_THROTTLE_RECOVERY_S:
            return
        configured = configured_rate(self.config)
        raised = state.throttled_rate * THROTTLE_STEP_UP
        # With no rate configured, lifted once it no longer binds: the cluster sends at less
        # than half of it.
        lifted = raised >= configured if configured else raised >= 2 * self._recent_rate(now)
        new = None if lifted else raised
        if self._store.set_throttle(self.server_id, new, state.throttled_at, now):
            self._state = replace(state, throttled_rate=new, throttled_at=now)
            kind = Kind.THROTTLE_LIFTED if new is None else Kind.THROTTLE_EASED
            self.emit(kind, detail={"rate": new, "quiet_s": settings.SMTP_THROTTLE_RECOVERY_S})

    def retire(self) -> None:
        """The pool is closed: the heartbeat renews the slots of its connections still out
        until the last one is given back, then forgets this object."""
        with self._lock:
            self._retiring = True
            done = not self._slots
        if done:
            heartbeat().discard(self)


class Heartbeat:
    """One thread per process that keeps every SharedLimits of the process current."""

    def __init__(self):
        self._limits: weakref.WeakSet[SharedLimits] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, limits: SharedLimits) -> None:
        with self._lock:
            self._limits.add(limits)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="smtp-limits", daemon=True)
                self._thread.start()

    def discard(self, limits: SharedLimits) -> None:
        with self._lock:
            self._limits.discard(limits)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                self.beat()
            except Exception:  # the store is away: try again next round; slots run out meanwhile
                log.exception("the shared limits' heartbeat failed")
            finally:
                db.connection.close()

    def beat(self) -> None:
        from smtp_settings.models import SmtpServer
        from smtp_settings.pool import ServerConfig

        with self._lock:
            limits = list(self._limits)
        if not limits:
            return
        rows = {server.pk: server for server in SmtpServer.objects.filter(pk__in={lim.server_id for lim in limits})}
        now = time.time()
        for lim in limits:
            row = rows.get(lim.server_id)
            try:
                lim.beat(ServerConfig.of(row) if row is not None else None, now)
            except STORE_ERRORS:  # this server's round waits for the next; the others go on
                log.warning("server %s: the shared limits' heartbeat failed", lim.server_id, exc_info=True)


_heartbeat = Heartbeat()


def heartbeat() -> Heartbeat:
    return _heartbeat
