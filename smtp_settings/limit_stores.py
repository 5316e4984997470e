"""Where the cluster keeps its shared limits: the database (SQLite or PostgreSQL) by default,
Redis when REDIS_URL is set. `store()` gives the one in use.

Both keep the same things, per server, and every operation that decides is atomic:
- Connection slots: numbered leases with an owner ("host:pid"). A slot is taken only while
  fewer than the ceiling are held; an expired one is free again.
- Demand: the processes using or waiting for a server's connections, so each gets a fair share.
- Pacing: one "next send" time per server (GCRA with no burst): each message reserves its
  turn, `interval` seconds after the previous one, whichever process sends it.
- Quotas: rolling windows ("hour", "day") kept in BUCKETS buckets each. A window counts the
  buckets that overlap the last `span` seconds, whole, so it never counts less than was sent.
- Feedback: a lowered connection ceiling, the time of the last refusal or upward probe, and a
  throttled rate with the time it last changed.
- A per-minute count of what was sent ("sent"), for the server card.

The limits package (https://limits.readthedocs.io) was considered for the windows: its
storages are memory, Redis, Memcached and MongoDB, none of them SQL, and its exact moving
window keeps one entry per message (50,000 for a day of Amazon SES). Keeping one algorithm in
two small stores, tested alike, was simpler than two algorithms with different semantics.

Times are seconds since the epoch from the caller's clock (hosts keep time with NTP).
"""

import math
import threading
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Sum
from redis import RedisError

from project.sqlite_writes import one_writer
from smtp_settings.models import ConnectionSlot, LimitState, SlotDemand, WindowCount

BUCKETS = 24  # buckets per quota window
STORE_ERRORS = (DatabaseError, RedisError)  # what a store raises when it is out of reach
SENT_BUCKET_S = 5  # the card's "last minute" is counted in these


@dataclass(frozen=True)
class Window:
    """A quota: at most `quota` units in any `span_s` seconds."""

    name: str  # "hour" or "day"
    span_s: float
    quota: int

    @property
    def bucket_s(self) -> float:
        return self.span_s / BUCKETS

    def bucket(self, now: float) -> int:
        return math.floor(now / self.bucket_s)

    def first_counted(self, now: float) -> int:
        """The oldest bucket that may still hold a unit sent within the last span."""
        return self.bucket(now) - BUCKETS

    def ends(self, bucket: int) -> float:
        """When `bucket` stops counting."""
        return (bucket + BUCKETS + 1) * self.bucket_s


@dataclass(frozen=True)
class Exhausted:
    """A quota window with no room for the units asked: when enough frees (None: never, the
    units alone are more than the quota)."""

    window: str
    used: int
    quota: int
    free_at: float | None


@dataclass(frozen=True)
class State:
    ceiling: int | None = None  # lowered connection ceiling, None: the configured one
    probe_at: float = 0.0
    throttled_rate: float | None = None
    throttled_at: float = 0.0


@dataclass
class Figures:
    """What the server card shows, cluster-wide."""

    open: int = 0
    sent_last_minute: int = 0
    used: dict = field(default_factory=dict)  # window name -> units in it now
    state: State = field(default_factory=State)
    owners: int = 0  # processes holding or waiting for connections


def exhausted(window: Window, buckets: dict[int, int], units: int, now: float) -> Exhausted | None:
    """Whether `units` more fit in `window`, given its counted buckets (bucket -> used)."""
    used = sum(buckets.values())
    if used + units <= window.quota:
        return None
    if units > window.quota:
        return Exhausted(window.name, used, window.quota, None)
    freed = 0
    for bucket in sorted(buckets):
        freed += buckets[bucket]
        if used - freed + units <= window.quota:
            return Exhausted(window.name, used, window.quota, window.ends(bucket))
    return Exhausted(window.name, used, window.quota, now)  # unreachable: the last bucket frees all


class LimitStore(Protocol):
    def take_slot(self, server_id: int, owner: str, ceiling: int, expires_at: float, now: float) -> int | None:
        """Take a free slot number if fewer than `ceiling` live slots are held; None if not."""

    def give_slot(self, server_id: int, owner: str, number: int) -> None:
        """Give a slot back (only if `owner` still holds it)."""

    def renew(self, owner: str, slots: list[tuple[int, int]], expires_at: float) -> list[tuple[int, int]]:
        """Extend the owner's slots (server_id, number); returns those it still held."""

    def holders(self, server_id: int, now: float) -> dict[str, int]:
        """Live slot holders of a server and how many each holds."""

    def drop_owner(self, owner: str) -> None:
        """Forget everything a dead process held, on every server."""

    def note_demand(self, server_id: int, owner: str, waiting: bool, expires_at: float) -> None:
        """Say that `owner` uses (or waits for) the server's connections until `expires_at`."""

    def demand(self, server_id: int, now: float) -> dict[str, bool]:
        """Live demands: owner -> waiting."""

    def reserve(self, server_id: int, interval_s: float, now: float) -> float:
        """Reserve the next turn `interval_s` after the previous one; returns when it is."""

    def take_quota(self, server_id: int, units: int, windows: list[Window], now: float) -> Exhausted | None:
        """Count `units` in every window if all have room; otherwise count nothing and say
        which window is full and until when."""

    def count_sent(self, server_id: int, units: int, now: float) -> None:
        """Add to the card's per-minute figure."""

    def state(self, server_id: int) -> State: ...

    def set_ceiling(self, server_id: int, ceiling: int | None) -> None: ...

    def claim_probe(self, server_id: int, quiet_s: float, now: float) -> bool:
        """True for exactly one caller once `quiet_s` passed since the last refusal or probe."""

    def note_refusal(self, server_id: int, now: float) -> None: ...

    def set_throttle(self, server_id: int, rate: float | None, unchanged_since: float, now: float) -> bool:
        """Set the throttled rate (None: not throttled) unless someone changed it after
        `unchanged_since`; True if this call set it."""

    def figures(self, server_id: int, windows: list[Window], now: float) -> Figures: ...

    def forget(self, server_id: int) -> None:
        """Drop everything kept for a deleted server."""


class DatabaseStore:
    """The shared limits in the database: nothing else to run. SQLite serialises writers
    (IMMEDIATE transactions); on PostgreSQL the server's LimitState row is locked FOR UPDATE
    where a decision reads before it writes."""

    def __init__(self):
        self._known: set[int] = set()  # servers whose LimitState row exists
        self._lock = threading.Lock()

    def _state_row(self, server_id: int, again: bool = False) -> None:
        """Make sure the server's LimitState row exists (`again`: it was found missing)."""
        if server_id in self._known and not again:
            return
        LimitState.objects.bulk_create([LimitState(server_id=server_id)], ignore_conflicts=True)
        with self._lock:
            self._known.add(server_id)

    def _serialise(self, server_id: int) -> None:
        """Inside a transaction: make deciders of this server wait for each other."""
        self._state_row(server_id)
        if connection.vendor == "sqlite":  # its IMMEDIATE transaction holds the write lock already
            return
        with connection.cursor() as cursor:  # a decider stopped mid-transaction holds up the others this long only
            cursor.execute("SET LOCAL lock_timeout = '5s'")
        if not LimitState.objects.select_for_update().filter(server_id=server_id).exists():
            self._state_row(server_id, again=True)
            LimitState.objects.select_for_update().filter(server_id=server_id).exists()

    # -- slots --

    def take_slot(self, server_id, owner, ceiling, expires_at, now):
        try:
            with transaction.atomic():
                self._serialise(server_id)
                slots = ConnectionSlot.objects.filter(server_id=server_id)
                slots.filter(expires_at__lt=now).delete()
                taken = set(slots.values_list("number", flat=True))
                if len(taken) >= ceiling:
                    return None
                number = next(n for n in range(len(taken) + 1) if n not in taken)
                ConnectionSlot.objects.create(server_id=server_id, number=number, owner=owner, expires_at=expires_at)
                return number
        except IntegrityError:  # cannot happen while deciders are serialised; never over the ceiling
            return None

    def give_slot(self, server_id, owner, number):
        ConnectionSlot.objects.filter(server_id=server_id, number=number, owner=owner).delete()

    def renew(self, owner, slots, expires_at):
        held = []
        with transaction.atomic():
            for server_id, number in slots:
                mine = ConnectionSlot.objects.filter(server_id=server_id, number=number, owner=owner)
                if mine.update(expires_at=expires_at):
                    held.append((server_id, number))
        return held

    def holders(self, server_id, now):
        rows = ConnectionSlot.objects.filter(server_id=server_id, expires_at__gte=now).values_list("owner", flat=True)
        counts: dict[str, int] = {}
        for owner in rows:
            counts[owner] = counts.get(owner, 0) + 1
        return counts

    def drop_owner(self, owner):
        with transaction.atomic():
            ConnectionSlot.objects.filter(owner=owner).delete()
            SlotDemand.objects.filter(owner=owner).delete()

    # -- demand --

    def note_demand(self, server_id, owner, waiting, expires_at):
        changed = SlotDemand.objects.filter(server_id=server_id, owner=owner).update(
            waiting=waiting, expires_at=expires_at
        )
        if not changed:
            SlotDemand.objects.bulk_create(
                [SlotDemand(server_id=server_id, owner=owner, waiting=waiting, expires_at=expires_at)],
                ignore_conflicts=True,
            )

    def demand(self, server_id, now):
        rows = SlotDemand.objects.filter(server_id=server_id, expires_at__gte=now).values_list("owner", "waiting")
        return dict(rows)

    # -- pacing and quotas --

    def reserve(self, server_id, interval_s, now):
        self._state_row(server_id)
        sql = _RESERVE_SQLITE if connection.vendor == "sqlite" else _RESERVE
        with one_writer(), connection.cursor() as cursor:
            cursor.execute(sql, [now, interval_s, server_id])
            row = cursor.fetchone()
            if row is None:  # the row went (the server was forgotten): make it again
                self._state_row(server_id, again=True)
                cursor.execute(sql, [now, interval_s, server_id])
                row = cursor.fetchone()
        return row[0] - interval_s

    def take_quota(self, server_id, units, windows, now):
        # Plain SQL, as in reserve: this runs for every message, and building the ORM's
        # queries cost several times what SQLite takes to run them.
        with one_writer(), transaction.atomic():
            self._serialise(server_id)
            with connection.cursor() as cursor:
                cursor.execute(_COUNTED % ", ".join(["%s"] * len(windows)), [server_id, *(w.name for w in windows)])
                counted = cursor.fetchall()
            for window in windows:
                first = window.first_counted(now)
                buckets = {bucket: used for name, bucket, used in counted if name == window.name and bucket >= first}
                full = exhausted(window, buckets, units, now)
                if full:
                    return full
            for window in windows:
                self._add(server_id, window.name, window.bucket(now), units, keep_from=window.first_counted(now))
        return None

    def _add(self, server_id: int, name: str, bucket: int, units: int, keep_from: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute(_ADD_TO_BUCKET, [units, server_id, name, bucket])
            if cursor.rowcount:
                return
            cursor.execute(_DROP_BUCKETS, [server_id, name, keep_from])  # a new bucket: the ones out of the window go
            cursor.execute(_NEW_BUCKET, [server_id, name, bucket, units])

    def count_sent(self, server_id, units, now):
        bucket = math.floor(now / SENT_BUCKET_S)
        with one_writer(), transaction.atomic():
            self._serialise(server_id)
            self._add(server_id, "sent", bucket, units, keep_from=bucket - 60 // SENT_BUCKET_S)

    # -- feedback --

    def state(self, server_id):
        row = LimitState.objects.filter(server_id=server_id).first()
        if row is None:
            return State()
        return State(row.ceiling, row.probe_at, row.throttled_rate, row.throttled_at)

    def set_ceiling(self, server_id, ceiling):
        self._state_row(server_id, again=True)  # rare: make sure
        LimitState.objects.filter(server_id=server_id).update(ceiling=ceiling)

    def claim_probe(self, server_id, quiet_s, now):
        self._state_row(server_id, again=True)  # rare: make sure
        quiet = LimitState.objects.filter(server_id=server_id, probe_at__lte=now - quiet_s)
        return quiet.update(probe_at=now) == 1

    def note_refusal(self, server_id, now):
        self._state_row(server_id, again=True)  # rare: make sure
        LimitState.objects.filter(server_id=server_id).update(probe_at=now)

    def set_throttle(self, server_id, rate, unchanged_since, now):
        self._state_row(server_id, again=True)  # rare: make sure
        unchanged = LimitState.objects.filter(server_id=server_id, throttled_at__lte=unchanged_since)
        return unchanged.update(throttled_rate=rate, throttled_at=now) == 1

    def figures(self, server_id, windows, now):
        counts = WindowCount.objects.filter(server_id=server_id)
        sent_from = math.floor(now / SENT_BUCKET_S) - 60 // SENT_BUCKET_S + 1
        used = {
            window.name: counts.filter(window=window.name, bucket__gte=window.first_counted(now)).aggregate(
                n=Sum("used")
            )["n"]
            or 0
            for window in windows
        }
        holders = self.holders(server_id, now)
        return Figures(
            open=sum(holders.values()),
            sent_last_minute=counts.filter(window="sent", bucket__gte=sent_from).aggregate(n=Sum("used"))["n"] or 0,
            used=used,
            state=self.state(server_id),
            owners=len(set(holders) | set(self.demand(server_id, now))),
        )

    def forget(self, server_id):
        with transaction.atomic():
            for model in (ConnectionSlot, SlotDemand, WindowCount, LimitState):
                model.objects.filter(server_id=server_id).delete()
        with self._lock:
            self._known.discard(server_id)


_RESERVE = (
    "UPDATE smtp_settings_limitstate SET next_send_at = GREATEST(next_send_at, %s) + %s"
    " WHERE server_id = %s RETURNING next_send_at"
)
_RESERVE_SQLITE = _RESERVE.replace("GREATEST", "MAX")
_COUNTED = 'SELECT "window", bucket, used FROM smtp_settings_windowcount WHERE server_id = %%s AND "window" IN (%s)'
_ADD_TO_BUCKET = (
    'UPDATE smtp_settings_windowcount SET used = used + %s WHERE server_id = %s AND "window" = %s AND bucket = %s'
)
_DROP_BUCKETS = 'DELETE FROM smtp_settings_windowcount WHERE server_id = %s AND "window" = %s AND bucket < %s'
_NEW_BUCKET = 'INSERT INTO smtp_settings_windowcount (server_id, "window", bucket, used) VALUES (%s, %s, %s, %s)'


@cache
def store() -> LimitStore:
    """The store for this process: Redis if REDIS_URL is set, else the database."""
    if settings.REDIS_URL:
        from smtp_settings.redis_store import RedisStore

        return RedisStore(settings.REDIS_URL, prefix=settings.LIMITS_KEY_PREFIX)
    return DatabaseStore()
