"""Sending a campaign in the background, every recipient exactly once.

How a campaign goes out
- `send_campaign(id)` (a django-q2 task) first takes the campaign's *lease*: one sender at a
  time per campaign, whatever the number of workers or hosts. A thread renews the lease every
  third of CAMPAIGN_LEASE_S for as long as the sender lives, however long a batch takes.
- It creates the delivery rows in chunks (keyset over subscribers, bulk inserts), then claims
  batches of deliveries (pending → sending, in one transaction) and sends each batch through
  RotatingEmailBackend, rendering each message only when a connection is ready for it, and
  records every outcome. A claim holds no more than the slowest applicable rate sends in a
  quarter of the lease, nor more than CAMPAIGN_BATCH_MEMORY_MB of messages.
- After CAMPAIGN_TASK_BUDGET_S it enqueues its successor and stops, so no task outlives
  django-q2's timeout (and is never handed to a second worker).
- Pause and cancel are seen between batches; a paused campaign resumes with what is left.
- A server whose quota window is full sends nothing until it has room (the backend gives the
  batch back untried); the others carry on. When all wait, the campaign says for what and
  until when (`waiting_reason`, `waiting_until`); a wait longer than the task ends it, and
  the watchdog starts a sender when the window has room.
- A task that fails on an unexpected error puts its deliveries back and records why; after
  TASK_FAILURES_BEFORE_PAUSE such failures in a row the campaign pauses, saying why.

Exactly once: fencing, not timing
- Every take of the lease raises the campaign's `lease_token`; deliveries are claimed under
  the taker's token (`claim_token`).
- The backend calls `on_final_dot` just before a message's content and final dot go out. We
  record that moment (`final_dot_at`) with one conditional UPDATE, the fence: it succeeds
  only if the row is still claimed under our token, the campaign's token is still ours, and
  our lease has not run out. Otherwise the message is held back before its dot (a server
  discards a transaction without it) and the batch stops. A sender that was paused, slowed
  or cut off past its lease therefore cannot complete a message it may have lost.
- Recovery (by the next holder of the lease, or the watchdog) takes the deliveries left in
  `sending` under an older token: those without `final_dot_at` go back to pending; the
  others are decided by CAMPAIGN_AMBIGUOUS_POLICY: "sent" flags them `ambiguous` (no
  duplicate, the default), "resend" sends them again (no loss).
- A lease is free when it has expired, or when its holder was a process on this host that
  no longer exists: a restarted worker carries on at once, not after the lease runs out.

Servers: batches go to the campaign's enabled servers in proportion to their connection
capacity (smooth weighted round robin); a server whose batch could not connect at all is
left out for SERVER_DOWN_S while the others carry on. Deferred deliveries come back after
CAMPAIGN_RETRY_DELAY_S, doubling, until the server's `retries` are used up: then failed.
"""

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django import db
from django.conf import settings
from django.core.mail import get_connection
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone
from django_q.tasks import async_task

from campaigns import eventlog
from campaigns.models import Campaign, Delivery, Subscriber
from campaigns.rendering import CampaignRenderer, RenderError, message_domain
from smtp_settings import processes
from smtp_settings.backends import StopBatch
from smtp_settings.events import Kind, smtp_event
from smtp_settings.limits import RateLimiter
from smtp_settings.models import SmtpServer
from smtp_settings.results import DEFERRED, FAILED, SENT
from smtp_settings.shared_limits import configured_rate

log = logging.getLogger(__name__)
Status = Delivery.Status

POPULATE_CHUNK = 2000
SERVER_DOWN_S = 60
CLAIM_LEASE_FRACTION = 0.25  # a claim holds what the slowest rate sends in this much of a lease
TASK_FAILURES_BEFORE_PAUSE = 3
BACKEND = "smtp_settings.backends.RotatingEmailBackend"


# -- the lease: one sender per campaign, fenced --


@dataclass(frozen=True)
class Lease:
    """A sender's hold on a campaign. `token` is the fencing token: the campaign's lease_token
    when this sender took it. A later take raises the campaign's token, and from then on
    nothing this sender writes under its own token matches any more."""

    campaign_id: int
    token: int


def lease_is_free(campaign: Campaign, now=None) -> bool:
    now = now or timezone.now()
    holder = campaign.lease_owner
    return not holder or not campaign.lease_until or campaign.lease_until < now or processes.is_gone(holder)


def take_lease(campaign_id: int) -> Lease | None:
    """Become the campaign's sender, unless a live one holds it (compare-and-swap on the token,
    which the take raises: whoever held the campaign before is fenced off from then on)."""
    now = timezone.now()
    row = Campaign.objects.filter(pk=campaign_id).only("lease_owner", "lease_until", "lease_token").first()
    if row is None or not lease_is_free(row, now):
        return None
    until = now + timedelta(seconds=settings.CAMPAIGN_LEASE_S)
    # A renewal since our read changes lease_until: then the holder lives, and the take fails.
    unchanged = Campaign.objects.filter(pk=campaign_id, lease_token=row.lease_token, lease_until=row.lease_until)
    taken = unchanged.update(lease_owner=processes.me(), lease_until=until, lease_token=row.lease_token + 1)
    return Lease(campaign_id, row.lease_token + 1) if taken == 1 else None


def renew_lease(lease: Lease) -> bool:
    until = timezone.now() + timedelta(seconds=settings.CAMPAIGN_LEASE_S)
    return Campaign.objects.filter(pk=lease.campaign_id, lease_token=lease.token).update(lease_until=until) == 1


def release_lease(lease: Lease) -> None:
    Campaign.objects.filter(pk=lease.campaign_id, lease_token=lease.token).update(lease_owner="", lease_until=None)


class LeaseKeeper:
    """Renews a lease from its own thread every third of CAMPAIGN_LEASE_S, however long a
    batch takes, until stopped or until the lease is found lost (`lost` is then set).

    Renewal only makes a takeover rare. What makes a duplicate impossible is the fence at
    each final dot, which a stopped or slowed sender fails once its lease is gone."""

    def __init__(self, lease: Lease):
        self.lease = lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.campaign_id}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval_s = settings.CAMPAIGN_LEASE_S / 3
        try:
            while not self._stop.wait(interval_s):
                try:
                    if not renew_lease(self.lease):
                        self.lost.set()
                        return
                except db.Error:  # try again next round, on a new connection; the fence holds meanwhile
                    log.warning("campaign %s: could not renew the lease", self.lease.campaign_id, exc_info=True)
                    connection.close()
        finally:
            connection.close()


# -- what the pools report, counted per campaign --

_TALLIED = {Kind.SESSION_CLOSED_421: "sessions_closed_421", Kind.RECONNECT: "reconnects", Kind.ROTATION: "rotations"}
_tally: Counter = Counter()
_tally_lock = threading.Lock()


@receiver(smtp_event, dispatch_uid="campaigns.sending.tally")
def _count_event(sender, event, **kwargs) -> None:
    field = _TALLIED.get(event.kind)
    campaign_id = event.context.get("campaign_id")
    if field and campaign_id:
        with _tally_lock:
            _tally[(campaign_id, field)] += 1


def _flush_tally(campaign_id: int) -> None:
    with _tally_lock:
        counts = {field: _tally.pop((campaign_id, field), 0) for field in _TALLIED.values()}
    changes = {field: F(field) + n for field, n in counts.items() if n}
    if changes:
        Campaign.objects.filter(pk=campaign_id).update(**changes)


@receiver(post_save, sender=SmtpServer, dispatch_uid="campaigns.sending.server_saved")
def _look_again_after_an_edit(sender, instance, **kwargs) -> None:
    """A campaign waiting for one of its servers' quota windows may have room after an edit
    (a larger quota, a server enabled): the watchdog looks again at its next round."""
    Campaign.objects.filter(servers=instance, status=Campaign.Status.RUNNING).exclude(waiting_until=None).update(
        waiting_until=timezone.now()
    )


# -- the task --


def send_campaign(campaign_id: int) -> None:
    lease = take_lease(campaign_id)
    if lease is None:
        log.info("campaign %s: another sender holds it", campaign_id)
        return
    more = False
    try:
        with LeaseKeeper(lease) as keeper:
            more = _send_under_lease(lease, keeper)
    except Exception as error:
        log.exception("campaign %s: the sending task failed", campaign_id)
        lease = _after_task_error(lease, error)
    finally:
        if lease is not None:
            release_lease(lease)
        eventlog.flush()
    if more:
        async_task("campaigns.tasks.send_campaign", campaign_id, group=f"campaign-{campaign_id}")


def _send_under_lease(lease: Lease, keeper: LeaseKeeper) -> bool:
    """Send what is left of the campaign; True when a successor task should carry on."""
    campaign = Campaign.objects.get(pk=lease.campaign_id)
    recover_orphans(campaign, lease)
    if campaign.status != Campaign.Status.RUNNING:
        return False
    populate(campaign)
    try:
        sender = CampaignSender(campaign, lease, keeper)
    except RenderError as error:  # templates saved around the form's checks (the admin, say)
        campaign.pause(f"The campaign's templates do not compile: {error}")
        return False
    return sender.run()


def _after_task_error(lease: Lease, error: Exception) -> Lease | None:
    """A sending task stopped on an unexpected error: put its deliveries back, say why, and
    pause the campaign if that keeps happening (the watchdog would restart it for ever).

    The sender first fences itself off by raising the token it holds the campaign with, so
    that no thread of the failed task can still finish a message; its rows are then orphans
    like a dead sender's. Returns the lease to release (None if it was lost meanwhile)."""
    try:
        fenced = Lease(lease.campaign_id, lease.token + 1)
        if not Campaign.objects.filter(pk=lease.campaign_id, lease_token=lease.token).update(lease_token=fenced.token):
            return None
        campaign = Campaign.objects.get(pk=lease.campaign_id)
        recover_orphans(campaign, fenced)
        Campaign.objects.filter(pk=campaign.pk).update(task_failures=F("task_failures") + 1)
        campaign.refresh_from_db(fields=["task_failures"])
        reason = f"{type(error).__name__}: {error}"[:2000]
        text, failures = f"The sending task stopped: {reason}", campaign.task_failures
        eventlog.record_campaign_event(campaign, eventlog.TASK_ERROR, text, failures_in_a_row=failures)
        if campaign.task_failures >= TASK_FAILURES_BEFORE_PAUSE:
            campaign.pause(f"Paused after {campaign.task_failures} sending tasks in a row failed. Last error: {reason}")
        return fenced
    except Exception:  # the database itself is away: the lease runs out, the watchdog recovers
        log.exception("campaign %s: could not record the failure", lease.campaign_id)
        return None


def recover_orphans(campaign: Campaign, lease: Lease) -> None:
    """Decide the fate of deliveries that senders before `lease` left in `sending`: their
    claims carry an older token, so no such sender can finish them any more."""
    orphans = campaign.deliveries.filter(status=Status.SENDING).filter(
        Q(claim_token__lt=lease.token) | Q(claim_token=None)
    )
    now = timezone.now()
    # Each row is decided by one conditional UPDATE, and loses its old claim with it, so the
    # fenced-off sender can write nothing more to it. A row whose dot is recorded between
    # the two statements (its sender read the campaign before our take committed: PostgreSQL)
    # matches neither and stays `sending`, to be decided as past its dot next time.
    with transaction.atomic():
        if settings.CAMPAIGN_AMBIGUOUS_POLICY == "sent":
            maybe = orphans.exclude(final_dot_at=None).update(
                status=Status.SENT,
                ambiguous=True,
                sent_at=now,
                claim_token=None,
                updated_at=now,
                last_reply="The sender stopped after the final dot went out: probably delivered, not sent again.",
            )
        else:
            maybe = orphans.exclude(final_dot_at=None).update(
                status=Status.PENDING, ambiguous=True, final_dot_at=None, claim_token=None, updated_at=now
            )
        never = orphans.filter(final_dot_at=None).update(
            status=Status.PENDING, claimed_at=None, claim_token=None, updated_at=now
        )
    if maybe:
        eventlog.record_campaign_event(
            campaign,
            Kind.AMBIGUOUS,
            f"{maybe} deliveries had gone past their final dot when their sender stopped: "
            + ("counted as sent." if settings.CAMPAIGN_AMBIGUOUS_POLICY == "sent" else "sent again."),
            deliveries=maybe,
            policy=settings.CAMPAIGN_AMBIGUOUS_POLICY,
        )
    if maybe or never:
        log.warning("campaign %s: recovered %s unsent and %s ambiguous deliveries", campaign.pk, never, maybe)


def populate(campaign: Campaign) -> None:
    """One delivery per active subscriber of the campaign's lists, in chunks, resumable."""
    if campaign.populated_at:
        return
    list_ids = list(campaign.lists.values_list("pk", flat=True))
    members = Subscriber.lists.through.objects.filter(
        mailinglist_id__in=list_ids, subscriber__status=Subscriber.Status.ACTIVE
    )
    after = campaign.deliveries.order_by("-subscriber_id").values_list("subscriber_id", flat=True).first() or 0
    while True:
        chunk = list(
            members.filter(subscriber_id__gt=after)
            .order_by("subscriber_id")
            .values_list("subscriber_id", flat=True)
            .distinct()[:POPULATE_CHUNK]
        )
        if not chunk:
            break
        Delivery.objects.bulk_create(
            [Delivery(campaign=campaign, subscriber_id=pk) for pk in chunk], ignore_conflicts=True
        )
        after = chunk[-1]
    Campaign.objects.filter(pk=campaign.pk).update(populated_at=timezone.now())


class ServerRotation:
    """Which server sends the next batch: smooth weighted round robin over the campaign's
    enabled servers, weighted by connection capacity, skipping servers that were down and
    servers waiting for a quota window."""

    def __init__(self, campaign: Campaign):
        self.campaign = campaign
        self.current: dict[int, float] = {}
        self.down_until: dict[int, float] = {}
        self.waiting: dict[int, tuple[float, str]] = {}  # server -> (until, epoch seconds; why)
        self.refresh()

    def refresh(self) -> None:
        """Read the campaign's enabled servers again: one disabled or deleted since the last
        batch sends no more, an edited one sends with its new settings."""
        self.servers = list(self.campaign.servers.filter(enabled=True).order_by("pk"))
        self.current = {server.pk: self.current.get(server.pk, 0.0) for server in self.servers}

    @staticmethod
    def weight(server: SmtpServer) -> int:
        return min(server.max_conns, server.learned_max_conns or server.max_conns)

    def next(self) -> SmtpServer | None:
        """The next server, or None while every server waits for a quota window."""
        now = time.monotonic()
        ready = [s for s in self.servers if self.waiting.get(s.pk, (0, ""))[0] <= time.time()]
        if not ready:
            return None
        up = [s for s in ready if self.down_until.get(s.pk, 0) <= now]
        if not up:
            return min(ready, key=lambda s: self.down_until[s.pk])
        total = sum(self.weight(s) for s in up)
        for server in up:
            self.current[server.pk] += self.weight(server)
        chosen = max(up, key=lambda s: self.current[s.pk])
        self.current[chosen.pk] -= total
        return chosen

    def mark_down(self, server: SmtpServer) -> bool:
        """Leave `server` out for a while; True if another one can take over."""
        self.down_until[server.pk] = time.monotonic() + SERVER_DOWN_S
        return any(self.down_until.get(s.pk, 0) <= time.monotonic() for s in self.servers)

    def wait(self, server: SmtpServer, until: float, reason: str) -> None:
        """Leave `server` out until its quota window has room (`until`, epoch seconds)."""
        self.waiting[server.pk] = (until, reason)

    def soonest(self) -> tuple[float, str]:
        """When the first waiting server has room again, and why they wait."""
        return min(self.waiting[s.pk] for s in self.servers)


def _message_id(campaign: Campaign, delivery: Delivery) -> str:
    """Stable per delivery: a message sent again after a crash keeps its Message-ID."""
    return f"<relaydeck.{campaign.pk}.{delivery.pk}@{message_domain(campaign)}>"


def _bytes_per_message(campaign: Campaign) -> int:
    """A generous guess at the memory one message of this campaign holds while its batch is
    out: the rendered parts (a text part made from the HTML is about as large), their MIME
    encoding and the bytes on the wire."""
    template_chars = len(campaign.subject) + len(campaign.html_body) + len(campaign.text_body or campaign.html_body)
    return 4 * template_chars + 4096


# The fence: a final dot may go out only for a row this sender claimed, while it still holds
# the campaign's lease under the same token, and before that lease runs out.
_FINAL_DOT = (
    "UPDATE campaigns_delivery SET final_dot_at = %s"
    " WHERE id = %s AND status = 'sending' AND claim_token = %s AND EXISTS ("
    "SELECT 1 FROM campaigns_campaign WHERE id = %s AND lease_token = %s AND lease_until > %s)"
)
_SENT_EARLY = (
    "UPDATE campaigns_delivery SET status = 'sent', sent_at = %s, last_code = %s, last_reply = %s, ambiguous = %s"
    " WHERE id = %s AND status = 'sending' AND claim_token = %s"
)
# The server may have been deleted while its batch was out: then the delivery names none.
_OUTCOME = (
    "UPDATE campaigns_delivery SET status = %s, attempts = %s,"
    " server_id = (SELECT id FROM smtp_settings_smtpserver WHERE id = %s), last_code = %s, last_reply = %s,"
    " message_id = %s, sent_at = %s, ambiguous = %s, next_attempt_at = %s, updated_at = %s"
    " WHERE id = %s AND status IN ('sending', 'sent') AND claim_token = %s"  # 'sent': by _SENT_EARLY
)
_thread = threading.local()


def _db_time(value):
    return connection.ops.adapt_datetimefield_value(value)


def _save_outcomes(deliveries: list[Delivery], lease: Lease) -> None:
    """Write each delivery's outcome in one statement run many times (bulk_update's CASE
    expressions cost milliseconds per row), and only where this sender's claim still stands."""
    rows = [
        [
            d.status,
            d.attempts,
            d.server_id,
            d.last_code,
            d.last_reply,
            d.message_id,
            _db_time(d.sent_at),
            d.ambiguous,
            _db_time(d.next_attempt_at),
            _db_time(d.updated_at),
            d.pk,
            lease.token,
        ]
        for d in deliveries
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_OUTCOME, rows)


class CampaignSender:
    """Claims and sends batches of one campaign until it is done, stopped, or the task's
    time is up. `run()` returns True when a successor task should carry on."""

    def __init__(self, campaign: Campaign, lease: Lease, keeper: LeaseKeeper):
        self.campaign = campaign
        self.lease = lease
        self.keeper = keeper
        self.renderer = CampaignRenderer(campaign)
        self.rotation = ServerRotation(campaign)
        self.rate_limiter = RateLimiter(campaign.rate_limit) if campaign.rate_limit else None
        memory_cap = settings.CAMPAIGN_BATCH_MEMORY_MB * 2**20 // _bytes_per_message(campaign)
        self.batch_size = max(1, min(settings.CAMPAIGN_BATCH_SIZE, memory_cap))

    def run(self) -> bool:
        deadline = time.monotonic() + settings.CAMPAIGN_TASK_BUDGET_S
        campaign = self.campaign
        while time.monotonic() < deadline:
            campaign.refresh_from_db(
                fields=["status", "consecutive_failures", "auto_pause_after", "task_failures", "waiting_until"]
            )
            if campaign.status != Campaign.Status.RUNNING or self.keeper.lost.is_set():
                return False
            self.rotation.refresh()
            if not self.rotation.servers:
                campaign.pause("None of the campaign's SMTP servers is enabled.")
                return False
            server = self.rotation.next()
            if server is None:  # every server waits for a quota window: wait, never defer
                if not self.wait_for_quota(deadline):
                    return False
                continue
            if campaign.waiting_until:
                self._ours().update(waiting_reason="", waiting_until=None)
                campaign.waiting_reason, campaign.waiting_until = "", None
            batch = self.claim(self.claim_size(server))
            if batch is None:  # the lease is gone
                return False
            if batch:
                if not self.send(server, batch) and not renew_lease(self.lease):
                    return False  # fenced off: another sender has the campaign
                if campaign.task_failures:
                    self._ours().update(task_failures=0)
                continue
            if self.finish_if_done():
                return False
            wait_s = self.seconds_to_next_retry()
            if wait_s is None or time.monotonic() + wait_s > deadline:
                return False  # the watchdog starts a sender when the retries are due
            time.sleep(min(wait_s, 1.0))
        return True

    def wait_for_quota(self, deadline: float) -> bool:
        """Say on the campaign what it waits for and until when, and wait a second; False
        when the wait outlasts this task (the watchdog starts a sender when it is over)."""
        until, reason = self.rotation.soonest()
        if not self.campaign.waiting_until:
            log.info("campaign %s: %s", self.campaign.pk, reason)
        self.campaign.waiting_until = datetime.fromtimestamp(until, UTC)
        self._ours().update(waiting_reason=reason[:500], waiting_until=self.campaign.waiting_until)
        wait_s = until - time.time()
        if time.monotonic() + wait_s > deadline:
            return False
        time.sleep(max(0.0, min(wait_s, 1.0)))
        return True

    def claim_size(self, server: SmtpServer) -> int:
        """As many deliveries as the slowest applicable rate sends in a quarter of the lease:
        a claim should never outlast the lease that protects it (renewal covers a server
        slower than its rate, and the fence covers a sender that stops renewing)."""
        rates = [rate for rate in (self.campaign.rate_limit, configured_rate(server)) if rate > 0]
        if not rates:
            return self.batch_size
        return max(1, min(self.batch_size, int(min(rates) * settings.CAMPAIGN_LEASE_S * CLAIM_LEASE_FRACTION)))

    def claim(self, size: int) -> list[Delivery] | None:
        """Up to `size` deliveries, pending or due again, claimed under this sender's token;
        None if the lease is no longer ours."""
        now = timezone.now()
        deliveries = self.campaign.deliveries
        token = self.lease.token
        with transaction.atomic():
            if not Campaign.objects.filter(pk=self.campaign.pk, lease_token=token).exists():
                return None
            ids = list(deliveries.filter(status=Status.PENDING).order_by("id").values_list("id", flat=True)[:size])
            if len(ids) < size:
                due = deliveries.filter(status=Status.DEFERRED, next_attempt_at__lte=now).order_by("id")
                ids += due.values_list("id", flat=True)[: size - len(ids)]
            Delivery.objects.filter(id__in=ids, status__in=(Status.PENDING, Status.DEFERRED)).update(
                status=Status.SENDING, claimed_at=now, final_dot_at=None, claim_token=token
            )
        mine = Delivery.objects.filter(id__in=ids, status=Status.SENDING, claim_token=token)
        return list(mine.select_related("subscriber").order_by("id"))

    def _record_final_dot(self, message) -> None:
        """The backend's on_final_dot hook, run in the sending thread (plain SQL: the ORM's
        update costs more than the message itself). It is the fence: if this sender's claim
        or lease is gone, the message is held back before its dot and the batch stops.

        It first records that this thread's previous message was accepted, so a sender that
        dies leaves at most one message per thread whose fate is unknown, not a whole batch
        whose outcomes were waiting to be written. (Two statements, each committed: a crash
        between them leaves both rows telling the truth.)"""
        now = _db_time(timezone.now())
        token = self.lease.token
        previous, _thread.previous = getattr(_thread, "previous", None), message
        result = getattr(previous, "smtp_result", None)
        try:
            with connection.cursor() as cursor:
                if result is not None and result.status == SENT:
                    early = [now, result.code, result.text[:2000], result.ambiguous, previous.delivery_id, token]
                    cursor.execute(_SENT_EARLY, early)
                cursor.execute(_FINAL_DOT, [now, message.delivery_id, token, self.campaign.pk, token, now])
                fenced_off = cursor.rowcount != 1
        except db.Error as error:  # not the server's fault: stop, give the batch back, no attempt used
            raise StopBatch(f"the final dot could not be recorded: {error}") from error
        if fenced_off:
            raise StopBatch("this sender no longer holds the campaign")

    def _messages(self, batch: list[Delivery], settled: list[Delivery], out: list):
        """Each delivery's message, rendered only when the backend is ready to send it, so a
        batch never holds more than its memory budget; appends (delivery, message) to `out`
        and deliveries that need no message to `settled`."""
        now = timezone.now()
        for delivery in batch:
            delivery.updated_at = now
            if delivery.subscriber.status != Subscriber.Status.ACTIVE:
                delivery.status, delivery.last_reply = Status.SKIPPED, "not subscribed any more"
                settled.append(delivery)
                continue
            delivery.message_id = delivery.message_id or _message_id(self.campaign, delivery)
            try:
                message = self.renderer.message(delivery.subscriber, delivery.message_id)
            except RenderError as error:
                delivery.status, delivery.last_reply = Status.FAILED, f"the template failed for them: {error}"
                settled.append(delivery)
                continue
            message.delivery_id = delivery.pk
            message.event_context = {"delivery_id": delivery.pk}
            out.append((delivery, message))
            yield message

    def send(self, server: SmtpServer, batch: list[Delivery]) -> bool:
        """Send `batch` through `server` and record what became of each delivery. Returns
        False if the fence stopped the batch (this sender may have lost the campaign)."""
        now = timezone.now()
        _thread.previous = None  # a message of an earlier batch is recorded already
        messages, settled = [], []
        backend = get_connection(
            BACKEND,
            server=server,
            fail_silently=True,
            event_context={"campaign_id": self.campaign.pk},
            on_final_dot=self._record_final_dot,
            rate_limiter=self.rate_limiter,
            retries=0,  # deferred deliveries come back in a later pass, not in this batch
            max_threads=len(batch),
        )
        backend.send_messages(self._messages(batch, settled, messages))

        answered = [(delivery, message) for delivery, message in messages if not message.smtp_result.stopped]
        waits = [m.smtp_result for _, m in messages if m.smtp_result.stopped and m.smtp_result.resume_at]
        if waits:
            self.rotation.wait(server, waits[0].resume_at, waits[0].text)
        failures = None
        if answered and self._unreachable(answered) and self.rotation.mark_down(server):
            log.warning("campaign %s: %s unreachable, its batch goes to another server", self.campaign.pk, server)
            for delivery, _ in answered:
                delivery.status, delivery.updated_at = Status.PENDING, now
        elif answered:
            failures = self._judge(server, answered, now)
        self._write_outcomes([*settled, *(delivery for delivery, _ in answered)])
        self._give_back_unsent([delivery.pk for delivery, message in messages if message.smtp_result.stopped])
        _flush_tally(self.campaign.pk)
        if failures is not None:
            self._count_failures(*failures)
        return len(answered) == len(messages)

    def _write_outcomes(self, deliveries: list[Delivery]) -> None:
        """What the worker knows must reach the database before anything else is decided:
        without it, recovery would have to guess (and might send a delivered message again).
        So a failed write is tried once more, after the database had a moment."""
        try:
            _save_outcomes(deliveries, self.lease)
        except db.Error:
            log.warning("campaign %s: writing outcomes failed, trying again", self.campaign.pk, exc_info=True)
            connection.close()  # a broken connection is not reopened outside a request: a new one
            time.sleep(1)
            _save_outcomes(deliveries, self.lease)

    def _give_back_unsent(self, stopped_ids: list[int]) -> None:
        """Deliveries this sender claimed but never took to their dot go back in line, where a
        claim of ours still stands: those the batch never reached, and those it stopped at the
        fence. (A stopped one may carry the final dot of an earlier attempt, but the backend
        only tries a message again after the server refused that dot.)"""
        mine = self.campaign.deliveries.filter(status=Status.SENDING, claim_token=self.lease.token)
        mine.filter(Q(final_dot_at=None) | Q(pk__in=stopped_ids)).update(
            status=Status.PENDING, claim_token=None, final_dot_at=None, updated_at=timezone.now()
        )

    @staticmethod
    def _unreachable(messages) -> bool:
        """Nothing got through and no server reply says why: the server could not be reached."""
        results = [message.smtp_result for _, message in messages]
        return all(result.status == DEFERRED and result.code is None for result in results)

    def _judge(self, server: SmtpServer, messages, now) -> tuple[int, str]:
        """Set each delivery's outcome from its message's result; returns the failures in a
        row, counted on from the campaign's, and the last failure's reply."""
        failures_in_a_row = self.campaign.consecutive_failures
        last_failure = ""
        for delivery, message in messages:
            result = message.smtp_result
            delivery.attempts += 1
            delivery.server = server
            delivery.last_code, delivery.last_reply = result.code, result.text[:2000]
            delivery.updated_at = now
            if result.status == SENT:
                delivery.status, delivery.sent_at, delivery.ambiguous = Status.SENT, now, result.ambiguous
                failures_in_a_row = 0
                continue
            if result.status == FAILED or delivery.attempts > server.retries:
                delivery.status = Status.FAILED
            else:
                delivery.status = Status.DEFERRED
                delay_s = settings.CAMPAIGN_RETRY_DELAY_S * 2 ** (delivery.attempts - 1)
                delivery.next_attempt_at = now + timedelta(seconds=delay_s)
            failures_in_a_row += 1
            last_failure = f"{delivery.last_code or ''} {delivery.last_reply}".strip()
        return failures_in_a_row, last_failure

    def _ours(self):
        """The campaign, while this sender holds it: what it writes of the campaign as a whole."""
        return Campaign.objects.filter(pk=self.campaign.pk, lease_token=self.lease.token)

    def _count_failures(self, in_a_row: int, last_failure: str) -> None:
        campaign = self.campaign
        if not self._ours().update(consecutive_failures=in_a_row):
            return  # fenced off: the sender now in charge counts
        campaign.consecutive_failures = in_a_row
        if campaign.auto_pause_after and in_a_row >= campaign.auto_pause_after:
            reason = f"Paused after {in_a_row} failed deliveries in a row. Last reply: {last_failure}"
            if campaign.pause(reason):
                eventlog.record_campaign_event(campaign, eventlog.AUTO_PAUSE, reason)
            log.warning("campaign %s auto-paused after %s failures in a row", campaign.pk, in_a_row)

    def finish_if_done(self) -> bool:
        unfinished = self.campaign.deliveries.filter(status__in=(Status.PENDING, Status.SENDING, Status.DEFERRED))
        if unfinished.exists():
            return False
        now = timezone.now()
        self._ours().filter(status=Campaign.Status.RUNNING).update(
            status=Campaign.Status.FINISHED, finished_at=now, updated_at=now
        )
        return True

    def seconds_to_next_retry(self) -> float | None:
        deferred = self.campaign.deliveries.filter(status=Status.DEFERRED).order_by("next_attempt_at")
        due_at = deferred.values_list("next_attempt_at", flat=True).first()
        return None if due_at is None else max(0.0, (due_at - timezone.now()).total_seconds())


# -- the watchdog: scheduled launches, stalled senders, orphaned rows --


def watchdog() -> None:
    """Run every minute (see `setup_schedules`) and when a worker starts."""
    now = timezone.now()
    for campaign in Campaign.objects.filter(status=Campaign.Status.SCHEDULED, scheduled_at__lte=now):
        campaign.launch()
    stalled = Campaign.objects.filter(
        Q(status=Campaign.Status.RUNNING) | Q(deliveries__status=Status.SENDING)
    ).distinct()
    for campaign in stalled:
        if not lease_is_free(campaign, now) or (campaign.waiting_until and campaign.waiting_until > now):
            continue  # a sender is on it, or it waits for a quota window
        if campaign.status == Campaign.Status.RUNNING:
            async_task("campaigns.tasks.send_campaign", campaign.pk, group=f"campaign-{campaign.pk}")
        elif lease := take_lease(campaign.pk):
            try:
                recover_orphans(campaign, lease)
            finally:
                release_lease(lease)
