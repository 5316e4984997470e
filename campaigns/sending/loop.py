"""The sender loop: what one sending task does with the campaign it joined.

`send_campaign(id)` (a django-q2 task) joins the campaign (see leases.py), recovers what dead
senders left (recovery.py), makes the delivery rows if nobody has (in chunks, resumable), and
starts as many more senders as the servers can use. Then it claims batches and sends each
through RotatingEmailBackend, rendering each message only when a connection is ready for it,
and records every outcome. A claim holds no more than the slowest applicable rate sends in a
quarter of the lease, nor more than CAMPAIGN_BATCH_MEMORY_MB of messages. After
CAMPAIGN_TASK_BUDGET_S it enqueues its successor and stops, so no task outlives django-q2's
timeout (and is never handed to a second worker).

Stopping between messages: pause, cancel, auto-pause and a disabled server stop the batch in
hand within about a second (the keeper's watch, and the fence at every final dot). Messages
already past their dot finish; the rest of the claim goes back in line (dropped if cancelled).

Exactly once: the backend calls `on_final_dot` just before a message's content and final dot
go out. We record that moment (`final_dot_at`) with the fence (leases.FINAL_DOT); if it fails,
the message is held back before its dot (a server discards a transaction without it) and the
batch stops. Recovery decides rows whose sender died by that record.

A delivery whose subscriber left, or whose address is on the suppression list when its batch
is claimed (one lookup for the batch, in the claim's query), is `skipped`: never sent.

Transactional mail goes first: a batch through a server that outbox messages wait for
(smtp_settings/outbox/delivery.py) keeps to one connection, and still goes.

Bounces: a recipient whose RCPT TO was refused as a bad address is a hard bounce, one whose
RCPT deferrals ran out a soft bounce (smtp_settings/bounces/classify.py); they are recorded in
the transaction that writes the delivery's outcome, with the reference "d<id>", its VERP reference
through a server with a bounce domain. campaigns/bounces.py takes it from there (and may pause
the campaign on its guard rails, through `auto_pause`, as below).

Failures in a row are counted per message, in the order results come (`on_result`), across
all senders; the campaign pauses at `auto_pause_after`. Deferred deliveries come back after
CAMPAIGN_RETRY_DELAY_S, doubling, until the server's `retries` are used up: then failed.
A server whose batch could not connect at all is left out for a while (rotation.py). A server
whose quota window is full sends nothing until it has room; when all wait, the campaign says
for what and until when. A task that fails on an unexpected error puts its deliveries back and
records why; after TASK_FAILURES_BEFORE_PAUSE such failures in a row the campaign pauses.
"""

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial

from django import db
from django.conf import settings
from django.core.mail import get_connection
from django.db import connection, transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import timezone
from django_q.tasks import async_task

from campaigns import eventlog
from campaigns.models import Campaign, Delivery
from campaigns.rendering import CampaignRenderer, RenderError, message_domain
from campaigns.sending import leases
from campaigns.sending.leases import Lease, SenderKeeper
from campaigns.sending.recovery import recover_orphans
from campaigns.sending.rotation import ServerRotation
from project.sqlite_writes import one_writer
from smtp_settings.backends import StopBatch
from smtp_settings.bounces import classify
from smtp_settings.events import Kind, smtp_event
from smtp_settings.leases import FinalDotFence, judge, save_outcomes
from smtp_settings.limits import RateLimiter
from smtp_settings.models import SmtpServer
from smtp_settings.outbox.delivery import servers_waited_for
from smtp_settings.results import DEFERRED, SENT
from smtp_settings.shared_limits import configured_rate

log = logging.getLogger(__name__)
Status = Delivery.Status

POPULATE_CHUNK = 10_000
FIRST_RECRUIT_S = 1  # a sender looks for missing peers after this, then after twice as long, and so on
CLAIM_LEASE_FRACTION = 0.25  # a claim holds what the slowest rate sends in this much of a lease
TASK_FAILURES_BEFORE_PAUSE = 3
BACKEND = "smtp_settings.backends.RotatingEmailBackend"
TASK = "campaigns.tasks.send_campaign"


def start_senders(campaign: Campaign, count: int = 1) -> None:
    if count > 0:
        Campaign.objects.filter(pk=campaign.pk).update(senders_asked=F("senders_asked") + count)
    for _ in range(count):
        async_task(TASK, campaign.pk, group=f"campaign-{campaign.pk}")


def recruit(campaign: Campaign) -> None:
    """Start the senders the campaign can still use (a task that finds enough just ends).

    A worker's django-q2 pusher takes tasks ahead of its busy workers and holds them (up to
    its queue_limit, plus one in hand), so other hosts never see them. So twice the missing
    senders are asked for, and senders ask again a few times while they run (after 1, 2, 4…
    s): the extra tasks reach the workers that are free, and the rest end at once. Tasks
    asked for and not started yet never exceed twice the senders wanted, so a cluster with
    fewer workers than that does not pile up tasks in front of everything else."""
    wanted = leases.senders_wanted(campaign)
    missing = wanted - leases.live_senders(campaign)
    asked = Campaign.objects.values_list("senders_asked", flat=True).get(pk=campaign.pk)
    start_senders(campaign, min(2 * missing, 2 * wanted - asked))


# -- what the pools report, counted per campaign --

_TALLIED = {Kind.SESSION_CLOSED_421: "sessions_closed_421", Kind.RECONNECT: "reconnects", Kind.ROTATION: "rotations"}
_tally: Counter = Counter()
_tally_lock = threading.Lock()


@receiver(smtp_event, dispatch_uid="campaigns.sending.tally")
def _count_event(sender, event, **kwargs) -> None:
    """A campaign's own sending counts; a test message of it (campaigns/test_message.py) does not."""
    field = _TALLIED.get(event.kind)
    campaign_id = event.context.get("campaign_id")
    if field and campaign_id and not event.context.get("test_message"):
        with _tally_lock:
            _tally[(campaign_id, field)] += 1


def _flush_tally(campaign_id: int) -> None:
    with _tally_lock:
        counts = {field: _tally.pop((campaign_id, field), 0) for field in _TALLIED.values()}
    changes = {field: F(field) + n for field, n in counts.items() if n}
    if changes:
        Campaign.objects.filter(pk=campaign_id).update(**changes)


# -- the task --


def send_campaign(campaign_id: int) -> None:
    Campaign.objects.filter(pk=campaign_id, senders_asked__gt=0).update(senders_asked=F("senders_asked") - 1)
    lease = leases.join(campaign_id)
    if lease is None:
        log.info("campaign %s: not running, or it has all the senders it can use", campaign_id)
        return
    more, sender, failed = False, None, False
    try:
        with SenderKeeper(lease) as keeper:
            campaign = Campaign.objects.get(pk=campaign_id)
            recover_orphans(campaign)
            populate(campaign)
            recruit(campaign)
            try:
                sender = CampaignSender(campaign, lease, keeper)
            except RenderError as error:  # templates saved around the form's checks (the admin, say)
                campaign.pause(f"The campaign's templates do not compile: {error}")
            else:
                more = sender.run()
    except Exception as error:
        log.exception("campaign %s: the sending task failed", campaign_id)
        failed = True
        _after_task_error(lease, error)
    finally:
        leases.release(lease, sender.sent if sender else 0)
        eventlog.flush()
    if not failed:  # after a failure the watchdog tries again in a minute, not at once
        _hand_over(campaign_id, more)


def _ready(now) -> Q:
    """Deliveries a sender could claim now."""
    return Q(status=Status.PENDING) | Q(status=Status.DEFERRED, next_attempt_at__lte=now)


def _hand_over(campaign_id: int, more: bool) -> None:
    """A successor when this task's time is up; and one when the campaign is running with work
    waiting but no sender left (it was resumed while this one was stopping, say)."""
    campaign = Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.RUNNING).first()
    if campaign is None:
        return
    if more or (
        (not campaign.waiting_until or campaign.waiting_until <= timezone.now())
        and campaign.deliveries.filter(_ready(timezone.now())).exists()
        and not leases.live_senders(campaign)
    ):
        start_senders(campaign)


def _after_task_error(lease: Lease, error: Exception) -> None:
    """A sending task stopped on an unexpected error: put its deliveries back, say why, and
    pause the campaign if that keeps happening (the watchdog would restart it for ever).

    The sender first fences itself off, so that no thread of the failed task can still
    finish a message; its rows are then orphans like a dead sender's."""
    try:
        leases.release(lease, 0)
        campaign = Campaign.objects.get(pk=lease.campaign_id)
        recover_orphans(campaign)
        Campaign.objects.filter(pk=campaign.pk).update(task_failures=F("task_failures") + 1)
        campaign.refresh_from_db(fields=["task_failures"])
        reason = f"{type(error).__name__}: {error}"[:2000]
        text, failures = f"The sending task stopped: {reason}", campaign.task_failures
        eventlog.record_campaign_event(campaign, eventlog.TASK_ERROR, text, failures_in_a_row=failures)
        if campaign.task_failures >= TASK_FAILURES_BEFORE_PAUSE:
            campaign.pause(f"Paused after {campaign.task_failures} sending tasks in a row failed. Last error: {reason}")
    except Exception:  # the database itself is away: the lease runs out, the watchdog recovers
        log.exception("campaign %s: could not record the failure", lease.campaign_id)


def populate(campaign: Campaign) -> None:
    """One delivery per subscriber of the campaign's lists, in chunks (INSERT … SELECT:
    building 100,000 model instances cost seconds), resumable, and harmless if two senders do
    it at once: a subscriber's second row is not inserted. Subscribers who bounced or
    complained get one too, which the sender skips (their address is suppressed), so that the
    campaign counts them as skipped; those who unsubscribed or were blocklisted get none."""
    if campaign.populated_at:
        return
    list_ids = list(campaign.lists.values_list("pk", flat=True))
    if list_ids:
        deliveries = campaign.deliveries.order_by("-subscriber_id").values_list("subscriber_id", flat=True)
        after = deliveries.first() or 0
        lists = ", ".join(["%s"] * len(list_ids))
        while True:
            with one_writer(), connection.cursor() as cursor:
                cursor.execute(_POPULATE.format(lists=lists), [campaign.pk, *list_ids, after, POPULATE_CHUNK])
            last = deliveries.first() or 0
            if last <= after:
                break
            after = last
    Campaign.objects.filter(pk=campaign.pk).update(populated_at=timezone.now())


_POPULATE = (
    "INSERT INTO campaigns_delivery (campaign_id, subscriber_id, status, attempts, last_reply, message_id, ambiguous)"
    " SELECT DISTINCT %s, m.subscriber_id, 'pending', 0, '', '', FALSE FROM campaigns_subscriber_lists m"
    " JOIN campaigns_subscriber s ON s.id = m.subscriber_id"
    " WHERE m.mailinglist_id IN ({lists}) AND s.status IN ('active', 'bounced', 'complained')"
    " AND m.subscriber_id > %s"
    " ORDER BY m.subscriber_id LIMIT %s"
    " ON CONFLICT DO NOTHING"
)


def _bytes_per_message(campaign: Campaign) -> int:
    """A generous guess at the memory one message of this campaign holds while its batch is
    out: the rendered parts (a text part made from the HTML is about as large), their MIME
    encoding and the bytes on the wire."""
    template_chars = len(campaign.subject) + len(campaign.html_body) + len(campaign.text_body or campaign.html_body)
    return 4 * template_chars + 4096


def _why_skipped(delivery: Delivery) -> str:
    """Why a claimed delivery is not sent after all, if it is not: their address is on the
    suppression list (as it stood when the batch was claimed), or its subscriber left."""
    if delivery.suppressed:
        return "the address is on the suppression list"
    if not delivery.subscriber.is_active:
        return "not subscribed any more"
    return ""


def _save_outcomes(deliveries: list[Delivery], lease: Lease, confirm=frozenset(), then=None) -> set[int]:
    return save_outcomes(
        "campaigns_delivery", deliveries, lease.token, extra=("message_id",), confirm=confirm, then=then
    )


def auto_pause(campaign: Campaign, reason: str) -> bool:
    """The campaign pauses itself and says why, in its pause reason and in the log (once, if
    several senders try at once). Its senders stop between two messages: their keepers see
    it within a second, and the fence refuses every final dot from then on."""
    if not campaign.pause(reason[:2000]):
        return False
    transaction.on_commit(lambda: eventlog.record_campaign_event(campaign, eventlog.AUTO_PAUSE, reason))
    log.warning("campaign %s auto-paused: %s", campaign.pk, reason)
    return True


class CampaignSender:
    """Claims and sends batches of one campaign until it is done, stopped, or the task's
    time is up. `run()` returns True when a successor task should carry on."""

    def __init__(self, campaign: Campaign, lease: Lease, keeper: SenderKeeper):
        self.campaign = campaign
        self.lease = lease
        self.keeper = keeper
        self.sent = 0
        self.renderer = CampaignRenderer(campaign)
        # Stable per delivery: a message sent again after a crash keeps its Message-ID.
        self.message_id_format = f"<relaydeck.{campaign.pk}.{{}}@{message_domain(campaign)}>"
        self.rotation = ServerRotation(campaign)
        # The campaign's rate is shared out among the senders it gets (each paces its own part).
        self.rate = campaign.rate_limit / leases.senders_wanted(campaign) if campaign.rate_limit else 0.0
        self.rate_limiter = RateLimiter(self.rate) if self.rate else None
        memory_cap = settings.CAMPAIGN_BATCH_MEMORY_MB * 2**20 // _bytes_per_message(campaign)
        self.batch_size = max(1, min(settings.CAMPAIGN_BATCH_SIZE, memory_cap))

    def run(self) -> bool:
        deadline = time.monotonic() + settings.CAMPAIGN_TASK_BUDGET_S
        campaign = self.campaign
        recruit_gap_s = FIRST_RECRUIT_S
        recruit_at = time.monotonic() + recruit_gap_s
        while time.monotonic() < deadline:
            if self.keeper.stop.is_set():
                return False
            if time.monotonic() >= recruit_at:
                recruit(campaign)
                recruit_gap_s *= 2
                recruit_at = time.monotonic() + recruit_gap_s
            campaign.refresh_from_db(fields=["status", "auto_pause_after", "task_failures", "waiting_until"])
            if campaign.status != Campaign.Status.RUNNING:
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
            ids = leases.claim(self.lease, self.claim_size(server))
            if ids:
                sent_before = self.sent
                self.send(server, leases.claimed(self.lease, ids))
                if campaign.waiting_until and self.sent > sent_before:  # not before: the window may still be full
                    Campaign.objects.filter(pk=campaign.pk).update(waiting_reason="", waiting_until=None)
                    campaign.waiting_reason, campaign.waiting_until = "", None
                if campaign.task_failures:
                    Campaign.objects.filter(pk=campaign.pk).update(task_failures=0)
                continue
            if recover_orphans(campaign):  # a dead sender's rows came back in line
                continue
            if self.finish_if_done():
                return False
            wait_s = self.seconds_to_next_retry()
            if wait_s is None or time.monotonic() + wait_s > deadline:
                return False  # the others finish; the watchdog starts a sender when retries are due
            time.sleep(min(wait_s, 1.0))
        return True

    def wait_for_quota(self, deadline: float) -> bool:
        """Say on the campaign what it waits for and until when, and wait a second; False
        when the wait outlasts this task (the watchdog starts a sender when it is over)."""
        until, reason = self.rotation.soonest()
        if not self.campaign.waiting_until:
            log.info("campaign %s: %s", self.campaign.pk, reason)
        self.campaign.waiting_until = datetime.fromtimestamp(until, UTC)
        Campaign.objects.filter(pk=self.campaign.pk, status=Campaign.Status.RUNNING).update(
            waiting_reason=reason[:500], waiting_until=self.campaign.waiting_until
        )
        wait_s = until - time.time()
        if time.monotonic() + wait_s > deadline:
            return False
        self.keeper.stop.wait(max(0.0, min(wait_s, 1.0)))
        return True

    def claim_size(self, server: SmtpServer) -> int:
        """As many deliveries as the slowest applicable rate sends in a quarter of the lease:
        a claim should never outlast the lease that protects it (renewal covers a server
        slower than its rate, and the fence covers a sender that stops renewing)."""
        rates = [rate for rate in (self.rate, configured_rate(server)) if rate > 0]
        if not rates:
            return self.batch_size
        return max(1, min(self.batch_size, int(min(rates) * settings.CAMPAIGN_LEASE_S * CLAIM_LEASE_FRACTION)))

    def _count_result(self, message) -> None:
        """The backend's on_result hook: failures in a row, per message, in the order results
        come from every sender; the campaign pauses at `auto_pause_after`. A success resets the
        count only when it may be above 0 (the keeper looks twice a second), so the common case
        writes nothing here."""
        result = message.smtp_result
        if result.stopped or (result.status == DEFERRED and result.code is None):
            return  # not tried, or the server was not reached: says nothing about the address
        if result.status == SENT and not self.keeper.failures_seen:
            return
        campaign = Campaign.objects.filter(pk=self.campaign.pk)
        try:
            if result.status == SENT:
                self.keeper.failures_seen = False
                campaign.filter(consecutive_failures__gt=0).update(consecutive_failures=0)
                return
            with transaction.atomic():
                campaign.update(consecutive_failures=F("consecutive_failures") + 1)
                in_a_row = campaign.values_list("consecutive_failures", flat=True).get()
        except db.Error:
            log.warning("campaign %s: could not count a failure", self.campaign.pk, exc_info=True)
            return
        self.keeper.failures_seen = True
        limit = self.campaign.auto_pause_after
        if limit and in_a_row >= limit:
            self._auto_pause(in_a_row, f"{result.code or ''} {result.text}".strip())
            raise StopBatch("the campaign paused itself")

    def _auto_pause(self, in_a_row: int, last_failure: str) -> None:
        campaign = Campaign.objects.get(pk=self.campaign.pk)
        auto_pause(campaign, f"Paused after {in_a_row} failed deliveries in a row. Last reply: {last_failure}")
        self.keeper.stop.set()

    def _messages(self, server: SmtpServer, batch: list[Delivery], settled: list[Delivery], out: list):
        """Each delivery's message, rendered only when the backend is ready to send it, so a
        batch never holds more than its memory budget; appends (delivery, message) to `out`
        and deliveries that need no message to `settled`. Stops as soon as the campaign stops
        or the server is disabled: what is left goes back in line."""
        now = timezone.now()
        for delivery in batch:
            if self.keeper.stop.is_set() or server.pk not in self.keeper.servers:
                return
            delivery.updated_at = now
            if skip := _why_skipped(delivery):
                delivery.status, delivery.last_reply = Status.SKIPPED, skip
                settled.append(delivery)
                continue
            delivery.message_id = delivery.message_id or self.message_id_format.format(delivery.pk)
            try:
                message = self.renderer.message(delivery.subscriber, delivery.message_id)
            except RenderError as error:
                delivery.status, delivery.last_reply = Status.FAILED, f"the template failed for them: {error}"
                settled.append(delivery)
                continue
            message.row_id, message.server_id = delivery.pk, server.pk  # for the fence
            message.event_context = {"delivery_id": delivery.pk}
            message.bounce_reference = f"d{delivery.pk}"
            out.append((delivery, message))
            yield message

    def send(self, server: SmtpServer, batch: list[Delivery]) -> None:
        """Send `batch` through `server` and record what became of each delivery."""
        now = timezone.now()
        messages, settled = [], []
        backend = get_connection(
            BACKEND,
            server=server,
            fail_silently=True,
            event_context={"campaign_id": self.campaign.pk},
            on_final_dot=FinalDotFence(
                leases.FINAL_DOT,
                self.lease.token,
                self.keeper.stop,
                stopped="the campaign is no longer running, or this sender lost its lease",
                fenced_off="this sender may no longer send it: the campaign stopped, or the lease or server is gone",
            ),
            on_result=self._count_result,
            rate_limiter=self.rate_limiter,
            retries=0,  # deferred deliveries come back in a later pass, not in this batch
            # Transactional mail goes first: while the outbox waits for this server, the
            # campaign keeps one connection, so the outbox gets the others at once.
            max_threads=1 if server.pk in servers_waited_for() else len(batch),
        )
        backend.send_messages(self._messages(server, batch, settled, messages))

        answered = [(delivery, message) for delivery, message in messages if not message.smtp_result.stopped]
        waits = [m.smtp_result for _, m in messages if m.smtp_result.stopped and m.smtp_result.resume_at]
        if waits:
            self.rotation.wait(server, waits[0].resume_at, waits[0].text)
        if answered and self._unreachable(answered) and self.rotation.mark_down(server):
            log.warning("campaign %s: %s unreachable, its batch goes to another server", self.campaign.pk, server)
            for delivery, _ in answered:
                delivery.status, delivery.updated_at = Status.PENDING, now
        elif answered:
            self._judge(server, answered, now)
        bounces = classify.found_in((delivery, message.smtp_result) for delivery, message in answered)
        self._write_outcomes(
            [*settled, *(delivery for delivery, _ in answered)],
            confirm=bounces.keys(),
            then=partial(classify.record_found, bounces, prefix="d", server=server),
        )
        self._give_back_unsent([delivery.pk for delivery, message in messages if message.smtp_result.stopped])
        self.sent += sum(1 for delivery, _ in answered if delivery.status == Status.SENT)
        _flush_tally(self.campaign.pk)

    def _write_outcomes(self, deliveries: list[Delivery], confirm=frozenset(), then=None) -> None:
        """What the worker knows must reach the database before anything else is decided:
        without it, recovery would have to guess (and might send a delivered message again).
        So a failed write is tried once more, after the database had a moment. `confirm` and
        `then`: the rows with bounces, recorded in the same transaction (see save_outcomes)."""
        try:
            _save_outcomes(deliveries, self.lease, confirm, then)
        except db.Error:
            log.warning("campaign %s: writing outcomes failed, trying again", self.campaign.pk, exc_info=True)
            connection.close()  # a broken connection is not reopened outside a request: a new one
            time.sleep(1)
            _save_outcomes(deliveries, self.lease, confirm, then)

    def _give_back_unsent(self, stopped_ids: list[int]) -> None:
        """Deliveries this sender claimed but never took to their dot go back in line, where a
        claim of ours still stands: those the batch never reached, and those it stopped at the
        fence. (A stopped one may carry the final dot of an earlier attempt, but the backend
        only tries a message again after the server refused that dot.) A cancelled campaign
        drops them."""
        mine = self.campaign.deliveries.filter(status=Status.SENDING, claim_token=self.lease.token)
        mine.filter(Q(final_dot_at=None) | Q(pk__in=stopped_ids)).update(
            status=Status.PENDING, claim_token=None, final_dot_at=None, updated_at=timezone.now()
        )
        if Campaign.objects.filter(pk=self.campaign.pk, status=Campaign.Status.CANCELLED).exists():
            self.campaign.drop_unsent()  # and deferred outcomes written since the cancel

    @staticmethod
    def _unreachable(messages) -> bool:
        """Nothing got through and no server reply says why: the server could not be reached."""
        results = [message.smtp_result for _, message in messages]
        return all(result.status == DEFERRED and result.code is None for result in results)

    def _judge(self, server: SmtpServer, messages, now) -> None:
        """Set each delivery's outcome from its message's result."""
        for delivery, message in messages:
            judge(delivery, message.smtp_result, server, now, server.retries, settings.CAMPAIGN_RETRY_DELAY_S)

    def finish_if_done(self) -> bool:
        """Finish the campaign if nothing is left: checked under the campaign's lock, which
        Retry failed takes too, so rows it puts back in line are never left behind."""
        unfinished = self.campaign.deliveries.filter(status__in=(Status.PENDING, Status.SENDING, Status.DEFERRED))
        with transaction.atomic():
            self.campaign.lock()
            if unfinished.exists():
                return False
            self.campaign.finish()
        return True

    def seconds_to_next_retry(self) -> float | None:
        deferred = self.campaign.deliveries.filter(status=Status.DEFERRED).order_by("next_attempt_at")
        due_at = deferred.values_list("next_attempt_at", flat=True).first()
        return None if due_at is None else max(0.0, (due_at - timezone.now()).total_seconds())
