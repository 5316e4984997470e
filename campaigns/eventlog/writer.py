"""The event log's writer: every PoolEvent becomes an `Event` row, without slowing sending.

The `smtp_event` receiver only adds the event to an in-memory buffer (a dict lookup and an
unsaved model instance); a background thread writes the buffer with one bulk insert every
EVENT_LOG_FLUSH_S. Events of an outbox message (context `outbox_message_id`) keep its id.
Identical events of one campaign (or outbox message) and server in one flush (a storm of
421s or retries: same kind, stage, code and text) become one row with a `count`, so a storm
costs a few rows a second, and retention (`prune_events`) bounds the rest; but the event that
ended a connection (its 421, its network error) keeps a row per connection.

With EVENT_LOG_FLUSH_S = 0 (the tests) no thread runs and events wait for `flush()`, which
the campaign sender also calls when a task ends.
"""

import logging
import os
import threading
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.dispatch import receiver
from django.utils import timezone

from campaigns.models import Campaign, Event
from smtp_settings.events import CONNECTION_ENDS, Kind, PoolEvent, smtp_event
from smtp_settings.models import SmtpServer

log = logging.getLogger(__name__)

# Kinds that come in storms; others (a connect, a rotation, a learned limit) are each worth a row.
AGGREGATED = {
    Kind.SESSION_CLOSED_421,
    Kind.RECONNECT,
    Kind.RETRY,
    Kind.DEFERRED,
    Kind.TIMEOUT,
    Kind.NETWORK_ERROR,
    Kind.PROTOCOL_ERROR,
    Kind.CONNECT_FAILED,
    Kind.POOL_WAIT_TIMEOUT,
}
AUTO_PAUSE = "auto_pause"  # not a pool event: the campaign sender's own
TASK_ERROR = "task_error"  # likewise: a sending task stopped on an unexpected error
PRUNE_CHUNK = 5000


class _Buffer:
    def __init__(self):
        self._rows: dict[object, Event] = {}
        self._lock = threading.Lock()
        self._pid = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def add(self, row: Event, aggregate_key=None) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (a forked worker, say)
                self._start()
            key = aggregate_key if aggregate_key is not None else object()
            known = self._rows.get(key)
            if known is None:
                self._rows[key] = row
            else:
                known.count += 1
                known.last_at = row.at

    def _start(self) -> None:
        self._pid = os.getpid()
        self._rows = {}
        self._thread = None  # a forked process does not inherit its parent's thread
        self._stopping.clear()
        if settings.EVENT_LOG_FLUSH_S > 0:
            self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(settings.EVENT_LOG_FLUSH_S):
            try:
                if self.flush():
                    connection.close()  # hold no connection between rounds
            except Exception:  # the database is away: these events are lost, not the sending
                log.exception("could not write events")
                connection.close()
        connection.close()

    def stop(self) -> None:
        """End the writing thread, if this process started one, then write what is left."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def flush(self) -> int:
        with self._lock:
            rows, self._rows = list(self._rows.values()), {}
        if not rows:
            return 0
        _drop_vanished_references(rows)
        try:
            with transaction.atomic():
                Event.objects.bulk_create(rows, batch_size=500)
            return len(rows)
        except (DatabaseError, ValueError):  # a row the database refuses: keep the others
            return _write_one_by_one(rows)


def _write_one_by_one(rows: list[Event]) -> int:
    written = 0
    for row in rows:
        row.pk = None  # a rolled-back bulk insert may have numbered it
        try:
            with transaction.atomic():
                Event.objects.bulk_create([row])
            written += 1
        except (DatabaseError, ValueError) as error:
            log.warning("dropped a %s event the database refused: %s", row.kind, error)
    return written


def _drop_vanished_references(rows: list[Event]) -> None:
    """A campaign or server deleted since its event was buffered: keep the event, not the link."""
    campaigns = set(Campaign.objects.filter(pk__in={r.campaign_id for r in rows}).values_list("pk", flat=True))
    servers = set(SmtpServer.objects.filter(pk__in={r.server_id for r in rows}).values_list("pk", flat=True))
    for row in rows:
        row.campaign_id = row.campaign_id if row.campaign_id in campaigns else None
        row.server_id = row.server_id if row.server_id in servers else None


_buffer = _Buffer()


def flush() -> int:
    """Write buffered events now; returns how many rows were written."""
    return _buffer.flush()


def _as_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


@receiver(smtp_event, dispatch_uid="campaigns.eventlog")
def record_pool_event(sender, event: PoolEvent, **kwargs) -> None:
    at = _as_datetime(event.at)
    campaign_id = event.context.get("campaign_id")
    outbox_message_id = event.context.get("outbox_message_id")
    row = Event(
        at=at,
        last_at=at,
        kind=event.kind,
        server_id=event.server_id,
        server_name=event.server_name,
        campaign_id=campaign_id,
        outbox_message_id=outbox_message_id,
        connection_id=event.connection_id,
        messages_on_connection=event.messages_on_connection,
        stage=event.stage,
        code=event.code,
        enhanced_code=event.enhanced_code,
        text=event.text,
        duration_ms=None if event.duration_s is None else round(event.duration_s * 1000, 2),
        recipient=event.recipient,
        message_id=event.message_id,
        detail=event.detail,
    )
    key = None
    if event.kind in AGGREGATED:
        ended = event.connection_id if event.kind in CONNECTION_ENDS else None  # a row per connection's end
        key = (campaign_id, outbox_message_id, event.server_id, event.kind, event.stage, event.code, event.text, ended)
    _buffer.add(row, key)


def record_campaign_event(campaign: Campaign, kind: str, text: str, **detail) -> None:
    """An event of the campaign's sender itself (an auto-pause, a recovery)."""
    now = timezone.now()
    _buffer.add(Event(at=now, last_at=now, kind=kind, campaign_id=campaign.pk, text=text, detail=detail))


def prune(days: int) -> int:
    """Delete events older than `days`, in chunks (never one huge transaction)."""
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(Event.objects.filter(at__lt=cutoff).order_by("id").values_list("id", flat=True)[:PRUNE_CHUNK])
        if not ids:
            return deleted
        deleted += Event.objects.filter(id__in=ids).delete()[0]
