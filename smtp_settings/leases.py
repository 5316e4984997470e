"""What every sender that claims rows shares (campaign senders in campaigns/sending/, outbox
senders in outbox/delivery.py): a lease kept from its own thread, the final-dot fence, and
the recovery of a dead sender's rows.

- A sender is a row whose id is its *fencing token*; it claims rows under that token and holds
  a lease (`lease_until`). `LeaseKeeper` renews it every third of its length for as long as
  the sender lives, however long a batch takes. A lease that ran out is never renewed: a
  sender stopped (SIGSTOP), slowed or cut off past it has lost its claims for good.
- `FinalDotFence` is the backend's `on_final_dot` hook: one conditional UPDATE records that a
  message's final dot is about to go out, and succeeds only for a row still claimed under the
  token while the lease stands (and whatever else the caller's statement requires). If it
  fails, the message is held back before its dot (a server discards a transaction without it)
  and the batch stops. This is what makes a duplicate impossible, whatever the timing.
- Outcomes: `judge` sets a row's outcome from its message's result (sent; deferred with a
  doubling wait; failed on a 5xx or after the retries), and `save_outcomes` writes them only
  where the claim still stands.
- Recovery: senders whose lease ran out, or whose process on this host is gone, are fenced
  off; a row they still hold went back in line if it never reached its dot (the server cannot
  hold it), else CAMPAIGN_AMBIGUOUS_POLICY decides: "sent" flags it ambiguous (never a
  duplicate), "resend" sends it again (never a loss).
"""

import logging
import threading
from datetime import UTC, datetime, timedelta

from django import db
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from project.sqlite_writes import one_writer
from smtp_settings import processes
from smtp_settings.backends import StopBatch
from smtp_settings.results import DEFERRED, FAILED, SENT

log = logging.getLogger(__name__)

WATCH_S = 0.5  # how often a keeper looks at what its sender watches
AMBIGUOUS_SENT = "The sender stopped after the final dot went out: probably delivered, not sent again."


def db_time(value):
    return connection.ops.adapt_datetimefield_value(value)


def live(owners) -> int:
    """How many of these holders ("host:pid") may still be alive."""
    return sum(1 for owner in owners if not processes.is_gone(owner))


class LeaseKeeper:
    """A sender's watch, from its own thread: `renew()` every third of `lease_s` and `look()`
    every WATCH_S. `stop` is set when the lease is lost (and by `look`, when the sender must
    take no more messages). Renewal only makes a takeover rare, and the watch only makes a
    stop quick: the fence at each final dot is what makes a duplicate impossible."""

    def __init__(self, name: str, lease_s: float):
        self.name = name
        self.lease_s = lease_s
        self.stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def renew(self) -> bool:
        """Extend the lease; False if it ran out or was fenced off (never revive it)."""
        raise NotImplementedError

    def look(self) -> None:
        """Read what the sender watches (subclasses)."""

    def __enter__(self):
        self.look()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        renew_every = max(1, round(self.lease_s / 3 / WATCH_S))
        rounds = 0
        try:
            while not self._done.wait(WATCH_S):
                rounds += 1
                try:
                    if rounds % renew_every == 0 and not self.renew():
                        self.stop.set()
                        return
                    self.look()
                except db.Error:  # try again next round, on a new connection; the fence holds meanwhile
                    log.warning("%s: could not renew or look", self.name, exc_info=True)
                    connection.close()
        finally:
            connection.close()


class FinalDotFence:
    """The backend's `on_final_dot` hook for one batch, run in the sending threads (plain SQL:
    the ORM's update costs more than the message itself).

    `sql` takes %(now)s, %(token)s, %(current)s (the row of the message whose dot is about to
    go out: `message.row_id`), %(server)s (`message.server_id`), and %(previous)s, %(code)s,
    %(reply)s, %(ambiguous)s: the thread's previous message, which was accepted (or none). It
    records both in one round trip, and RETURNING says which rows it changed: so a sender that
    dies leaves at most one message per thread whose fate is unknown, not a whole batch whose
    outcomes were waiting to be written."""

    def __init__(self, sql: str, token: int, stop: threading.Event, stopped: str, fenced_off: str):
        self.sql, self.token, self.stop = sql, token, stop
        self.stopped, self.fenced_off = stopped, fenced_off  # why StopBatch: before asking, and when refused
        self._thread = threading.local()

    def __call__(self, message) -> None:
        if self.stop.is_set():
            raise StopBatch(self.stopped)
        previous, self._thread.previous = getattr(self._thread, "previous", None), message
        result = getattr(previous, "smtp_result", None)
        accepted = result is not None and result.status == SENT
        params = {
            "now": db_time(timezone.now()),
            "token": self.token,
            "current": message.row_id,
            "server": message.server_id,
            "previous": previous.row_id if accepted else None,
            "code": result.code if accepted else None,
            "reply": result.text[:2000] if accepted else "",
            "ambiguous": result.ambiguous if accepted else False,
        }
        try:
            with one_writer(), connection.cursor() as cursor:
                cursor.execute(self.sql, params)
                refused = message.row_id not in {row[0] for row in cursor.fetchall()}
        except db.Error as error:  # not the server's fault: stop, give the batch back, no attempt used
            raise StopBatch(f"the final dot could not be recorded: {error}") from error
        if refused:
            raise StopBatch(self.fenced_off)


def fence_off_dead(senders: QuerySet) -> None:
    """End the leases that ran out, and those of holders on this host that are gone."""
    now = timezone.now()
    holding = senders.exclude(lease_until=None)
    holding.filter(lease_until__lte=now).update(lease_until=None, stopped_at=now)
    for pk, owner in holding.values_list("pk", "owner"):
        if processes.is_gone(owner):
            holding.filter(pk=pk).update(lease_until=None, stopped_at=now)


def settle_orphans(orphans: QuerySet, back_in_line: str, **cleared) -> tuple[int, int]:
    """Decide `orphans` (rows in `sending` whose sender is fenced off) by one conditional
    UPDATE each way, which also clears the claim, so a woken-up sender can change nothing.
    Returns (past their final dot, never reached it). Rows going back in line get the status
    `back_in_line` and the `cleared` fields; a row's status for sent is "sent".

    A row whose dot is recorded between the two statements (its sender's fence read the lease
    before it was fenced off: PostgreSQL) matches neither and stays `sending`, to be decided
    as past its dot next time."""
    now = timezone.now()
    with transaction.atomic():
        if settings.CAMPAIGN_AMBIGUOUS_POLICY == "sent":
            maybe = orphans.exclude(final_dot_at=None).update(
                status="sent", ambiguous=True, sent_at=now, claim_token=None, updated_at=now, last_reply=AMBIGUOUS_SENT
            )
        else:
            maybe = orphans.exclude(final_dot_at=None).update(
                status=back_in_line, ambiguous=True, final_dot_at=None, claim_token=None, updated_at=now
            )
        never = orphans.filter(final_dot_at=None).update(
            status=back_in_line, claim_token=None, updated_at=now, **cleared
        )
    return maybe, never


_OUTCOME_SET = [
    "status = %s",
    "attempts = %s",
    "server_id = (SELECT id FROM smtp_settings_smtpserver WHERE id = %s)",
    "last_code = %s",
    "last_reply = %s",
    "sent_at = %s",
    "ambiguous = %s",
    "next_attempt_at = %s",
    "updated_at = %s",
]


def save_outcomes(
    table: str, rows, token: int, extra: tuple[str, ...] = (), confirm=frozenset(), then=None
) -> set[int]:
    """Write each claimed row's outcome (as `judge` set it, and the `extra` fields) in one
    statement run many times (bulk_update's CASE expressions cost milliseconds per row), and
    only where the claim under `token` still stands: in `sending`, or `sent` as recorded at the
    thread's next final dot. The server may have been deleted while the batch was out: then
    the row names none.

    Rows whose pk is in `confirm` (a few: those with bounces to record) are written one at a
    time, to learn whether their write took effect: returns the pks of those that did.
    `then(those pks)`, if given, runs in the same transaction, after the writes (recording
    those rows' bounces): the writes and what it writes commit together, and what it raises
    rolls both back."""
    times: dict = {}  # a batch's rows share a few times: each converted once

    def at(value):
        if value not in times:
            times[value] = db_time(value)
        return times[value]

    assignments = ", ".join([*_OUTCOME_SET, *(f"{name} = %s" for name in extra)])
    claimed = "id = %s AND status IN ('sending', 'sent') AND claim_token = %s"
    sql = f"UPDATE {table} SET {assignments} WHERE {claimed}"  # noqa: S608 (the callers' names, no input)
    values, confirming = [], []
    for r in rows:
        (confirming if r.pk in confirm else values).append(
            [
                r.status,
                r.attempts,
                r.server_id,
                r.last_code,
                r.last_reply,
                at(r.sent_at),
                r.ambiguous,
                at(r.next_attempt_at),
                at(r.updated_at),
                *(getattr(r, name) for name in extra),
                r.pk,
                token,
            ]
        )
    confirmed = set()
    with one_writer(), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.executemany(sql, values)
            for row in confirming:
                cursor.execute(sql, row)
                if cursor.rowcount == 1:
                    confirmed.add(row[-2])
        if then is not None:
            then(confirmed)
    return confirmed


def judge(row, result, server, now, retries: int, retry_delay_s: float) -> None:
    """Set a claimed row's outcome from its message's `result` (an SmtpResult) through `server`:
    sent; failed on a 5xx or once `retries` deferrals are used up; else deferred, to come back
    after `retry_delay_s`, doubling with each attempt. (Rows say sent, deferred and failed as
    results do.)"""
    row.attempts += 1
    row.server = server
    row.last_code, row.last_reply = result.code, result.text[:2000]
    row.updated_at = now
    if result.status == SENT:  # at its own moment, not the batch's: the charts count per second
        row.status, row.sent_at, row.ambiguous = SENT, datetime.fromtimestamp(result.at, UTC), result.ambiguous
    elif result.status == FAILED or row.attempts > retries:
        row.status = FAILED
    else:
        row.status = DEFERRED
        row.next_attempt_at = now + timedelta(seconds=retry_delay_s * 2 ** (row.attempts - 1))
