"""Delivering the outbox: every message exactly once, through RotatingEmailBackend under the
shared limits, with the claims, leases and final-dot fence of campaign senders
(smtp_settings/leases.py).

- Waking. `wake_senders()` runs after every commit that queued messages (queue.enqueue). It
  asks for a django-q2 task (`smtp_settings.tasks.deliver_outbox`) only when no sender is
  live or asked for: one query on a small table. An asked-for task has its `OutboxSender`
  row at once (owner blank), whose lease counts it as live until it starts, or until the lease
  runs out if the task was lost. One sender at a time is enough: it sends raw bytes (nothing
  to render) over every connection of every server at once, and leaves the other workers to
  campaigns. The task claims and sends until nothing is ready, lingers LINGER_S for new
  arrivals, and ends; after CAMPAIGN_TASK_BUDGET_S it hands over to a fresh task. A sender
  that ends first gives up its lease and then looks for ready messages again, so a message
  queued meanwhile always finds a sender: either this one, or the one it asks for.
- Claims. One UPDATE takes the next ready messages (queued, or deferred and due), highest
  priority first, under the sender's token while its lease stands; on PostgreSQL they are
  chosen `FOR UPDATE SKIP LOCKED`. A claim holds no more than the slowest enabled server's
  rate sends in a quarter of the lease, and is sent in pieces of at most CLAIM_MEMORY_BYTES.
- Routes. A message goes through the enabled servers of its `route`; with none given, through
  the relay's default route (`RelayRoute`), or with none chosen there, the first enabled
  server by name. The messages of a claim are spread over their servers by connections, and
  each server's share is sent by a thread of its own. A message with no enabled server to go
  through is deferred, without using an attempt, and says why.
- Exactly once. The backend's on_final_dot hook is the fence (FINAL_DOT): a final dot goes
  out only for a message still claimed under this sender's token, while its lease stands and
  its server is enabled. If a sender dies (SIGKILL, a lost host), the next sender or the
  watchdog fences it off (at once on this host, else after OUTBOX_LEASE_S): a message that
  never reached its dot goes back in line, one past it is decided by
  CAMPAIGN_AMBIGUOUS_POLICY ("sent": flagged ambiguous; "resend": sent again).
- Outcomes. Sent; deferred after a 4xx or a network error, back after OUTBOX_RETRY_DELAY_S,
  doubling; failed on a 5xx, or after OUTBOX_RETRIES deferrals. A message the server took
  for some recipients and deferred for others (a 4xx to some RCPTs, or to a later
  transaction or API call of a message split by the server's RCPTMAX or the ESP's
  recipients per call) is deferred, and comes back to those only (RFC 5321): the
  recipients it settled (accepted, or refused for good) are remembered with its outcome, in
  the same transaction and only where the claim still stood (`OutboxRecipientDone`), and
  left out of its envelope at every later attempt; one with none left is sent. The
  pool's events carry {"outbox_message_id": id}, so the event log shows them with the
  message. A recipient refused as a bad address is a hard bounce, one whose deferrals ran
  out a soft bounce (bounces/classify.py), recorded with the reference "o<id>", which is
  also the message's VERP reference through a server with a bounce domain.
- Suppression. Recipients on the suppression list when the message is claimed are left out
  of its envelope (an event says who); a message with none left is skipped.
- Campaigns leave room: `servers_waited_for()` says which servers outbox messages wait for,
  and a campaign sender sending through one of them keeps a single connection for its batch.
- The watchdog (every minute, and when a worker starts) recovers a dead sender's messages
  and wakes a sender for deferred messages that are due.
"""

import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django import db
from django.conf import settings
from django.core.mail import get_connection
from django.db import connection
from django.db.models import Q
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django_q.tasks import async_task

from project.sqlite_writes import one_writer
from smtp_settings import processes
from smtp_settings.bounces import classify
from smtp_settings.events import Kind, PoolEvent, smtp_event
from smtp_settings.leases import (
    FinalDotFence,
    LeaseKeeper,
    db_time,
    fence_off_dead,
    judge,
    live,
    save_outcomes,
    settle_orphans,
)
from smtp_settings.models import (
    OutboxMessage,
    OutboxRecipientDone,
    OutboxSender,
    RelayRoute,
    SmtpServer,
    Suppression,
)
from smtp_settings.raw import RawMessage
from smtp_settings.results import DEFERRED
from smtp_settings.shared_limits import configured_rate

log = logging.getLogger(__name__)
Status = OutboxMessage.Status

TASK = "smtp_settings.tasks.deliver_outbox"
TABLE = OutboxMessage._meta.db_table
BACKEND = "smtp_settings.backends.RotatingEmailBackend"
CLAIM_SIZE = 100  # messages claimed at a time, at most
CLAIM_MEMORY_BYTES = 64 * 2**20  # a claim is sent in pieces of at most this many bytes of messages
CLAIM_LEASE_FRACTION = 0.25  # a claim holds what the slowest rate sends in this much of a lease
LINGER_S = 1.0  # a sender with nothing to send waits this long for new messages before it ends
POLL_S = 0.1
MAX_ROUTES = 100  # distinct routes looked at to tell which servers the outbox waits for
PRUNE_AFTER = timedelta(hours=1)  # stopped senders' rows are deleted after this
NO_SERVER = "not sent: no enabled SMTP server to send it through"
SHOWN_ADDRESSES = 5  # suppressed recipients named in a reply or an event, at most


@dataclass(frozen=True)
class Lease:
    """An outbox sender's hold; `token` is its OutboxSender row's id."""

    token: int


def _ready(now) -> Q:
    """Messages a sender could claim now."""
    return Q(status=Status.QUEUED) | Q(status=Status.DEFERRED, next_attempt_at__lte=now)


# -- senders --


def live_senders() -> int:
    """Senders working, or asked for and not started yet (owner blank)."""
    owners = OutboxSender.objects.filter(lease_until__gt=timezone.now()).values_list("owner", flat=True)
    return live(owners)


def wake_senders() -> None:
    """Make sure a sender delivers the outbox: ask for one unless one is live or asked for."""
    if not live_senders():
        ask_sender()


def ask_sender() -> None:
    """A task asked for, and its sender row: both or neither (a row whose task never went out
    would hold off every wake-up until its lease ran out). The row is committed first, so
    that the task finds it however soon a worker takes it."""
    until = timezone.now() + timedelta(seconds=settings.OUTBOX_LEASE_S)
    asked = OutboxSender.objects.create(owner="", lease_until=until)
    try:
        async_task(TASK, asked.pk, group="outbox")
    except Exception:
        asked.delete()
        raise


def join(sender_id: int | None = None) -> Lease | None:
    """Become the sender asked for as `sender_id` (None if that one started already or was
    dropped), or a new sender."""
    until = timezone.now() + timedelta(seconds=settings.OUTBOX_LEASE_S)
    if sender_id is None:
        return Lease(OutboxSender.objects.create(owner=processes.me(), lease_until=until).pk)
    asked = OutboxSender.objects.filter(pk=sender_id, owner="").exclude(lease_until=None)
    return Lease(sender_id) if asked.update(owner=processes.me(), lease_until=until) else None


def renew(lease: Lease) -> bool:
    now = timezone.now()
    until = now + timedelta(seconds=settings.OUTBOX_LEASE_S)
    return OutboxSender.objects.filter(pk=lease.token, lease_until__gt=now).update(lease_until=until) == 1


def release(lease: Lease, sent: int) -> None:
    OutboxSender.objects.filter(pk=lease.token).update(lease_until=None, stopped_at=timezone.now(), sent=sent)


class Keeper(LeaseKeeper):
    """Renews an outbox sender's lease from its own thread (the fence checks the rest)."""

    def __init__(self, lease: Lease):
        super().__init__(f"outbox-sender-{lease.token}", settings.OUTBOX_LEASE_S)
        self.lease = lease

    def renew(self) -> bool:
        return renew(self.lease)


# -- routes --


def capacity(server: SmtpServer) -> int:
    return min(server.max_conns, server.learned_max_conns or server.max_conns)


class Router:
    """Which enabled server each message goes through (see the module docstring), read once."""

    def __init__(self):
        self.enabled = list(SmtpServer.objects.filter(enabled=True).order_by("name"))
        self._by_id = {server.pk: server for server in self.enabled}
        chosen = set(RelayRoute.objects.filter(pk=1).values_list("servers", flat=True)) - {None}
        self.default = [server for server in self.enabled if server.pk in chosen] if chosen else self.enabled[:1]
        self._given: Counter = Counter()

    def candidates(self, route: list[int]) -> list[SmtpServer]:
        if not route:
            return self.default
        return [self._by_id[pk] for pk in route if pk in self._by_id]

    def choose(self, route: list[int]) -> SmtpServer | None:
        """The candidate with the fewest messages given per connection so far."""
        candidates = self.candidates(route)
        if not candidates:
            return None
        server = min(candidates, key=lambda s: self._given[s.pk] / capacity(s))
        self._given[server.pk] += 1
        return server


def servers_waited_for() -> set[int]:
    """The servers that outbox messages ready now, or being sent, go through. One query when
    the outbox has nothing to send: campaign senders ask before each batch."""
    waiting = OutboxMessage.objects.filter(_ready(timezone.now()) | Q(status=Status.SENDING))
    routes = list(waiting.order_by().values_list("route", flat=True).distinct()[:MAX_ROUTES])
    if not routes:
        return set()
    router = Router()
    return {server.pk for route in routes for server in router.candidates(route)}


# -- claims, the fence, outcomes --

_CLAIM = (
    "UPDATE smtp_settings_outboxmessage SET status = 'sending', final_dot_at = NULL, claim_token = %s,"
    " updated_at = %s WHERE id IN (SELECT id FROM smtp_settings_outboxmessage"
    " WHERE status = 'queued' OR (status = 'deferred' AND next_attempt_at <= %s) ORDER BY priority DESC, id LIMIT %s)"
    " AND EXISTS (SELECT 1 FROM smtp_settings_outboxsender WHERE id = %s AND lease_until > %s)"
    " RETURNING id, size, priority"
)
_CLAIM_SKIP_LOCKED = _CLAIM.replace("LIMIT %s)", "LIMIT %s FOR UPDATE SKIP LOCKED)")
# The fence, as campaigns/sending/leases.FINAL_DOT: a final dot may go out only for a message
# this sender claimed, while its lease stands and the server is enabled; the same statement
# records that the thread's previous message (`previous`, or none) was accepted.
FINAL_DOT = (
    "UPDATE smtp_settings_outboxmessage SET"
    " final_dot_at = CASE WHEN id = %(current)s THEN %(now)s ELSE final_dot_at END,"
    " server_id = (SELECT id FROM smtp_settings_smtpserver WHERE id = %(server)s),"
    " status = CASE WHEN id = %(previous)s THEN 'sent' ELSE status END,"
    " attempts = CASE WHEN id = %(previous)s THEN attempts + 1 ELSE attempts END,"
    " sent_at = CASE WHEN id = %(previous)s THEN %(now)s ELSE sent_at END,"
    " last_code = CASE WHEN id = %(previous)s THEN %(code)s ELSE last_code END,"
    " last_reply = CASE WHEN id = %(previous)s THEN %(reply)s ELSE last_reply END,"
    " ambiguous = CASE WHEN id = %(previous)s THEN %(ambiguous)s ELSE ambiguous END"
    " WHERE status = 'sending' AND claim_token = %(token)s AND (id = %(previous)s OR (id = %(current)s"
    " AND EXISTS (SELECT 1 FROM smtp_settings_outboxsender WHERE id = %(token)s AND lease_until > %(now)s)"
    " AND EXISTS (SELECT 1 FROM smtp_settings_smtpserver WHERE id = %(server)s AND enabled)))"
    " RETURNING id"
)


def claim(lease: Lease, size: int) -> list[tuple[int, int, int]]:
    """Claim up to `size` ready messages, highest priority first; returns (id, size, priority)
    of each, in the order to send them (none if the lease is gone)."""
    now = db_time(timezone.now())
    sql = _CLAIM_SKIP_LOCKED if connection.vendor == "postgresql" else _CLAIM
    with one_writer(), connection.cursor() as cursor:
        cursor.execute(sql, [lease.token, now, now, size, lease.token, now])
        rows = cursor.fetchall()
    return sorted(rows, key=lambda row: (-row[2], row[0]))


def pieces(claimed: list[tuple[int, int, int]]) -> list[list[int]]:
    """The claimed ids in order, cut where a piece would hold more than CLAIM_MEMORY_BYTES."""
    cut, piece, total = [], [], 0
    for pk, size, _ in claimed:
        if piece and total + size > CLAIM_MEMORY_BYTES:
            cut.append(piece)
            piece, total = [], 0
        piece.append(pk)
        total += size
    return [*cut, piece] if piece else cut


# -- the task --


def deliver(sender_id: int | None = None) -> None:
    """Send what the outbox holds until nothing is ready (`deliver_outbox`'s body)."""
    lease = join(sender_id)
    if lease is None:
        log.info("outbox: sender %s was asked for twice, or dropped", sender_id)
        return
    sender, more, failed = None, False, False
    try:
        with Keeper(lease) as keeper:
            recover_orphans()
            sender = OutboxDelivery(lease, keeper)
            more = sender.run()
    except Exception:
        log.exception("outbox: the delivery task failed")
        failed = True
    finally:
        release(lease, sender.sent if sender else 0)
    if failed:  # its messages go back in line; the watchdog tries again in a minute, not at once
        recover_orphans()
    elif more or OutboxMessage.objects.filter(_ready(timezone.now())).exists():
        wake_senders()


def recover_orphans() -> int:
    """Fence off dead senders and decide the messages they held; returns how many went back
    in line."""
    senders = OutboxSender.objects.all()
    fence_off_dead(senders)
    live_ones = senders.exclude(lease_until=None).values("pk")
    orphans = OutboxMessage.objects.filter(status=Status.SENDING).exclude(claim_token__in=live_ones)
    past_dot = list(orphans.exclude(final_dot_at=None).values_list("pk", "server_id", "message_id"))
    maybe, never = settle_orphans(orphans, Status.QUEUED)
    resend = settings.CAMPAIGN_AMBIGUOUS_POLICY == "resend"
    if maybe:
        names = dict(SmtpServer.objects.values_list("pk", "name"))
        text = "The sender stopped after the final dot went out: " + ("sent again." if resend else "counted as sent.")
        for pk, server_id, message_id in past_dot:
            event = PoolEvent(
                kind=Kind.AMBIGUOUS,
                server_id=server_id,
                server_name=names.get(server_id, ""),
                text=text,
                message_id=message_id[:255],
                detail={"policy": settings.CAMPAIGN_AMBIGUOUS_POLICY},
                context={"outbox_message_id": pk},
            )
            smtp_event.send(sender=OutboxMessage, event=event)
    if maybe or never:
        log.warning("outbox: recovered %s unsent and %s ambiguous messages", never, maybe)
    return never + (maybe if resend else 0)


def watchdog() -> None:
    """Every minute and when a worker starts: a dead sender's messages back in line, a sender
    for what is ready (deferred messages now due), and old senders' rows gone."""
    recover_orphans()
    OutboxSender.objects.filter(lease_until=None, stopped_at__lt=timezone.now() - PRUNE_AFTER).delete()
    if OutboxMessage.objects.filter(_ready(timezone.now())).exists():
        wake_senders()


class OutboxDelivery:
    """Claims and sends until nothing is ready (after LINGER_S), the lease is lost, or the
    task's time is up; `run()` returns True when a successor should carry on."""

    def __init__(self, lease: Lease, keeper: Keeper):
        self.lease = lease
        self.keeper = keeper
        self.sent = 0
        self._lock = threading.Lock()

    def run(self) -> bool:
        deadline = time.monotonic() + settings.CAMPAIGN_TASK_BUDGET_S
        while time.monotonic() < deadline:
            if self.keeper.stop.is_set():
                return False
            router = Router()
            claimed = claim(self.lease, self.claim_size(router))
            if claimed:
                for piece in pieces(claimed):
                    self.send(router, piece)
                continue
            if recover_orphans():
                continue
            if not self.arrival_within(LINGER_S):
                return False
        return True

    def arrival_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for a message to be ready (a read, not a claim, every POLL_S)."""
        until = time.monotonic() + seconds
        while not self.keeper.stop.wait(POLL_S):
            if OutboxMessage.objects.filter(_ready(timezone.now())).exists():
                return True
            if time.monotonic() >= until:
                return False
        return False

    def claim_size(self, router: Router) -> int:
        """As many as the slowest enabled server's rate sends in a quarter of the lease: a
        claim should never outlast the lease that protects it."""
        rates = [rate for rate in map(configured_rate, router.enabled) if rate > 0]
        if not rates:
            return CLAIM_SIZE
        return max(1, min(CLAIM_SIZE, int(min(rates) * settings.OUTBOX_LEASE_S * CLAIM_LEASE_FRACTION)))

    def send(self, router: Router, ids: list[int]) -> None:
        """Send the claimed messages `ids`, each server's share from a thread of its own."""
        mine = OutboxMessage.objects.filter(id__in=ids, status=Status.SENDING, claim_token=self.lease.token)
        groups, nowhere = defaultdict(list), []
        for message in self._without_suppressed(self._without_done(list(mine.order_by("-priority", "id")))):
            server = router.choose(message.route)
            (groups[server] if server else nowhere).append(message)
        if nowhere:
            self._defer_unrouted(nowhere)
        by_server, errors = list(groups.items()), []
        threads = [_in_thread(lambda s=s, g=g: self.send_through(s, g), errors) for s, g in by_server[1:]]
        if by_server:
            self.send_through(*by_server[0])
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _without_done(self, messages: list[OutboxMessage]) -> list[OutboxMessage]:
        """The messages to send, each without the recipients an earlier attempt settled (one
        lookup for the claim); the row keeps every recipient it was handed. A message with none
        left is `sent`."""
        done = defaultdict(set)
        settled = OutboxRecipientDone.objects.filter(message__in=[message.pk for message in messages])
        for pk, address in settled.values_list("message_id", "address"):
            done[pk].add(address)
        if not done:
            return messages
        now, kept, finished = timezone.now(), [], []
        for message in messages:
            message.recipients = [address for address in message.recipients if address not in done[message.pk]]
            if message.recipients:
                kept.append(message)
            else:
                message.status, message.sent_at, message.updated_at = Status.SENT, now, now
                finished.append(message)
        if finished:
            self._write_outcomes(finished)
        return kept

    def _without_suppressed(self, messages: list[OutboxMessage]) -> list[OutboxMessage]:
        """The messages to send, each without the recipients on the suppression list as it
        stands now (one lookup for the claim; an unsubscribe does not count for transactional
        mail). The envelope loses them, the bytes stay as the application made them, and the
        row keeps every recipient it was handed. A message left with no recipient is
        `skipped`, not sent. The log says who was left out once, at the message's first claim
        since it was queued (or requeued): not again each time a deferred message comes back."""
        recipients = (address for message in messages for address in message.recipients)
        suppressed = Suppression.held_from_transactional(recipients)
        if not suppressed:
            return messages
        now, kept, skipped = timezone.now(), [], []
        for message in messages:
            dropped = [address for address in message.recipients if Suppression.normalize(address) in suppressed]
            if not dropped:
                kept.append(message)
                continue
            message.recipients = [address for address in message.recipients if address not in dropped]
            if not message.attempts and message.next_attempt_at is None:  # never tried, nor waiting to be
                _report_suppressed(message, dropped)
            if message.recipients:
                kept.append(message)
                continue
            message.status, message.last_code, message.updated_at = Status.SKIPPED, None, now
            message.last_reply = f"not sent: every recipient is on the suppression list ({_some(dropped)})"
            skipped.append(message)
        if skipped:
            self._write_outcomes(skipped)
        return kept

    def _defer_unrouted(self, messages: list[OutboxMessage]) -> None:
        """No enabled server to go through: deferred, without using an attempt."""
        now = timezone.now()
        for message in messages:
            message.status, message.last_code, message.last_reply = Status.DEFERRED, None, NO_SERVER
            message.next_attempt_at = now + timedelta(seconds=settings.OUTBOX_RETRY_DELAY_S)
            message.updated_at = now
        self._write_outcomes(messages)

    def send_through(self, server: SmtpServer, messages: list[OutboxMessage]) -> None:
        """Send `messages` through `server` and record what became of each."""
        raw = []
        for message in messages:
            envelope = RawMessage(
                mail_from=message.mail_from,
                recipients=list(message.recipients),
                data=bytes(message.data),
                message_id=message.message_id,
                event_context={"outbox_message_id": message.pk},
                bounce_reference=f"o{message.pk}",
            )
            envelope.row_id, envelope.server_id = message.pk, server.pk  # for the fence
            raw.append(envelope)
        fence = FinalDotFence(
            FINAL_DOT,
            self.lease.token,
            self.keeper.stop,
            stopped="this outbox sender lost its lease",
            fenced_off="this outbox sender may no longer send it: its lease or the server is gone",
        )
        backend = get_connection(
            BACKEND, server=server, fail_silently=True, on_final_dot=fence, retries=0, max_threads=len(raw)
        )
        backend.send_messages(raw)

        now = timezone.now()
        tried = [(m, r.smtp_result) for m, r in zip(messages, raw, strict=True) if not r.smtp_result.stopped]
        for message, result in tried:
            judge(message, result, server, now, settings.OUTBOX_RETRIES, settings.OUTBOX_RETRY_DELAY_S)
        bounces = classify.found_in(tried)
        done = {message.pk: settled for message, result in tried if (settled := _settled(message, result))}
        self._write_outcomes(
            [message for message, _ in tried],
            confirm=bounces.keys() | done.keys(),
            then=partial(_record, bounces, done, server),
        )
        stopped = [m.pk for m, r in zip(messages, raw, strict=True) if r.smtp_result.stopped]
        self._give_back_unsent([message.pk for message in messages], stopped)
        with self._lock:
            self.sent += sum(1 for message, _ in tried if message.status == Status.SENT)

    def _write_outcomes(self, messages: list[OutboxMessage], confirm=frozenset(), then=None) -> None:
        """What the sender knows must reach the database (else recovery would guess, and might
        send a delivered message again): a failed write is tried once more. `confirm` and
        `then`: the messages with bounces, recorded in the same transaction (see save_outcomes)."""
        try:
            save_outcomes(TABLE, messages, self.lease.token, confirm=confirm, then=then)
        except db.Error:
            log.warning("outbox: writing outcomes failed, trying again", exc_info=True)
            connection.close()
            time.sleep(1)
            save_outcomes(TABLE, messages, self.lease.token, confirm=confirm, then=then)

    def _give_back_unsent(self, ids: list[int], stopped: list[int]) -> None:
        """Messages of `ids` claimed but never taken to their dot go back in line: those the
        batch never reached, and those stopped at the fence."""
        mine = OutboxMessage.objects.filter(pk__in=ids, status=Status.SENDING, claim_token=self.lease.token)
        mine.filter(Q(final_dot_at=None) | Q(pk__in=stopped)).update(
            status=Status.QUEUED, claim_token=None, final_dot_at=None, updated_at=timezone.now()
        )


def _settled(message: OutboxMessage, result) -> list[str]:
    """The recipients of a message now deferred that this attempt settled (accepted, or refused
    for good): its next attempts leave them out."""
    if message.status != Status.DEFERRED:
        return []
    return [address for address, answer in result.recipients.items() if answer.status != DEFERRED]


def _record(bounces: dict, done: dict[int, list[str]], server: SmtpServer, written: set[int]) -> None:
    """With the outcomes (save_outcomes' `then`), for the messages whose outcome was written:
    their bounces, and the recipients settled of those deferred."""
    classify.record_found(bounces, written, prefix="o", server=server)
    OutboxRecipientDone.objects.bulk_create(
        [OutboxRecipientDone(message_id=pk, address=address) for pk in done.keys() & written for address in done[pk]],
        ignore_conflicts=True,
    )


def _some(addresses: list[str]) -> str:
    """The first SHOWN_ADDRESSES of `addresses`, and how many more."""
    shown = ", ".join(addresses[:SHOWN_ADDRESSES])
    return shown + (f" and {len(addresses) - SHOWN_ADDRESSES} more" if len(addresses) > SHOWN_ADDRESSES else "")


def _report_suppressed(message: OutboxMessage, dropped: list[str]) -> None:
    """An event for the log, with the message: who it was not sent to."""
    event = PoolEvent(
        kind=Kind.SUPPRESSED,
        server_id=None,
        server_name="",
        text=f"not sent to {len(dropped)} recipient{pluralize(len(dropped))} on the suppression list: {_some(dropped)}",
        recipient=dropped[0][:254],
        message_id=message.message_id[:255],
        context={"outbox_message_id": message.pk},
    )
    smtp_event.send(sender=OutboxMessage, event=event)


def _in_thread(target, errors: list) -> threading.Thread:
    """Run `target` in a thread that closes its own database connection; what it raises is
    appended to `errors`."""

    def run():
        try:
            target()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
