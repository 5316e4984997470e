"""Subscribers, lists, campaigns and their deliveries.

A campaign's state changes are methods here, each a conditional UPDATE so that two clicks,
a click and a worker, or two workers can never both win; whoever wins enqueues the work.
Sending itself lives in `campaigns/sending/`.
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import models, transaction
from django.db.models import DurationField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from project.numbers import number, whole_number
from smtp_settings.events import Kind, connection_label
from smtp_settings.models import SmtpServer


class MailingList(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Subscriber(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BLOCKLISTED = "blocklisted", "Blocklisted"
        BOUNCED = "bounced", "Bounced"  # a hard bounce, or soft ones past the limit
        COMPLAINED = "complained", "Complained"  # marked a message as spam

    email = models.EmailField(max_length=254, unique=True, help_text="Stored lower-cased and trimmed.")
    name = models.CharField(max_length=200, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status, default=Status.ACTIVE)
    lists = models.ManyToManyField(MailingList, related_name="subscribers", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    @staticmethod
    def normalise_email(address: str) -> str:
        return address.strip().lower()

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    def set_status(self, status: str) -> None:
        self.status = status
        self.unsubscribed_at = None if status == self.Status.ACTIVE else timezone.now()
        self.save(update_fields=["status", "unsubscribed_at"])


class SubscriberImport(models.Model):
    """A CSV file being imported into a list, with its progress and its rejected rows."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Importing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    mailing_list = models.ForeignKey(MailingList, on_delete=models.CASCADE, related_name="imports")
    file = models.FileField(upload_to="imports/")
    original_name = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=8, choices=Status, default=Status.QUEUED)
    bytes_read = models.PositiveBigIntegerField(default=0)
    rows_read = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0, help_text="New subscribers.")
    merged = models.PositiveIntegerField(default=0, help_text="Rows matching an existing subscriber.")
    invalid = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{'line': n, 'reason': ...}], the first 1,000.")
    failure = models.TextField(blank=True, help_text="Why the whole import stopped, if it did.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.original_name} into {self.mailing_list}"

    @property
    def is_queued(self) -> bool:
        return self.status == self.Status.QUEUED

    @property
    def is_running(self) -> bool:
        return self.status == self.Status.RUNNING

    @property
    def is_finished(self) -> bool:
        """Done or failed: nothing more will change, so its page stops following it."""
        return self.status in (self.Status.DONE, self.Status.FAILED)


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        FINISHED = "finished", "Finished"

    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=500, help_text="A template: {{ subscriber.name }} works here.")
    from_email = models.CharField("From", max_length=255, help_text="An address, or Name <address>.")
    reply_to = models.CharField("Reply-To", max_length=255, blank=True)
    html_body = models.TextField("HTML body", blank=True)
    text_body = models.TextField("Text body", blank=True, help_text="Blank: made from the HTML body.")
    lists = models.ManyToManyField(MailingList, related_name="campaigns")
    servers = models.ManyToManyField(
        SmtpServer,
        related_name="campaigns",
        help_text="Several share the sending in proportion to their connections, and stand in for each other.",
    )
    # Servers it sent through that were deleted since: the campaign still says what it used.
    deleted_servers = models.JSONField(default=list, blank=True, editable=False)
    scheduled_at = models.DateTimeField("Send at", null=True, blank=True, help_text="Blank: when launched.")
    rate_limit = models.FloatField(
        null=True,
        blank=True,
        validators=number(0, 100_000),
        help_text="Messages per second for this campaign, 0–100,000. Blank or 0: the servers' limits only.",
    )
    auto_pause_after = models.PositiveIntegerField(
        default=50,
        validators=whole_number(0, 1_000_000),
        help_text="Pause after this many failures in a row, 0–1,000,000; 0 = never.",
    )
    max_complaint_rate = models.FloatField(
        "Complaint rate limit (%)",
        default=0.3,
        validators=number(0, 100),
        help_text="Pause once complaints pass this share of the messages sent, 0–100; 0 = never.",
    )
    max_hard_bounce_rate = models.FloatField(
        "Hard-bounce rate limit (%)",
        default=5.0,
        validators=number(0, 100),
        help_text="Pause once hard bounces pass this share of the messages sent, 0–100; 0 = never.",
    )
    guard_min_sample = models.PositiveIntegerField(
        "Minimum sample",
        default=1000,
        validators=whole_number(1, 100_000_000),
        help_text="The two rates count once this many messages are sent, 1–100,000,000.",
    )
    hard_bounces = models.PositiveIntegerField(default=0, editable=False)
    complaints = models.PositiveIntegerField(default=0, editable=False)

    status = models.CharField(max_length=10, choices=Status, default=Status.DRAFT)
    pause_reason = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    task_failures = models.PositiveSmallIntegerField(
        default=0, help_text="Sending tasks in a row that stopped on an error; the campaign pauses after a few."
    )
    # Set while every server of the campaign waits for a quota window or a rate (never a reason to defer).
    waiting_reason = models.CharField(max_length=500, blank=True)
    waiting_until = models.DateTimeField(null=True, blank=True)
    # What the connection pools reported while sending this campaign.
    sessions_closed_421 = models.PositiveIntegerField(default=0)
    reconnects = models.PositiveIntegerField(default=0)
    rotations = models.PositiveIntegerField(default=0)
    # When every subscriber of its lists had a delivery row (the first sender makes them).
    populated_at = models.DateTimeField(null=True, blank=True)
    # Sending tasks asked for by its senders and not started yet (see sending/loop.py, recruit).
    senders_asked = models.PositiveSmallIntegerField(default=0)
    # Made by `manage.py demo` (campaigns/demo.py), which may replace it once it has run.
    is_demo = models.BooleanField(default=False, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Time spent running, pauses left out: `active_time` up to `running_since`, which is set
    # while the campaign runs (kept by `_transition`, so the average rate ignores pauses).
    active_time = models.DurationField(default=timedelta(0), editable=False)
    running_since = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    # What each status allows. Views and templates ask these rather than the status, and the
    # state changes below use the same tuples, so a button shows only where its click can win.
    EDITABLE = (Status.DRAFT, Status.SCHEDULED)  # before sending starts
    DELETABLE = (Status.DRAFT, Status.FINISHED, Status.CANCELLED)  # nothing is being sent, or will be
    CANCELLABLE = (Status.DRAFT, Status.SCHEDULED, Status.RUNNING, Status.PAUSED)
    RETRYABLE = (Status.RUNNING, Status.PAUSED, Status.FINISHED)  # its failed deliveries can go out again
    UNDER_WAY = (Status.SCHEDULED, Status.RUNNING, Status.PAUSED)  # launched and not over: its lists are in use

    @property
    def is_editable(self) -> bool:
        return self.status in self.EDITABLE

    @property
    def is_deletable(self) -> bool:
        return self.status in self.DELETABLE

    @property
    def is_scheduled(self) -> bool:
        return self.status == self.Status.SCHEDULED

    @property
    def is_running(self) -> bool:
        return self.status == self.Status.RUNNING

    @property
    def is_paused(self) -> bool:
        return self.status == self.Status.PAUSED

    @property
    def is_cancelled(self) -> bool:
        return self.status == self.Status.CANCELLED

    @property
    def can_launch(self) -> bool:
        return self.status == self.Status.DRAFT

    @property
    def can_pause(self) -> bool:
        return self.is_running

    @property
    def can_resume(self) -> bool:
        return self.is_paused

    @property
    def can_cancel(self) -> bool:
        return self.status in self.CANCELLABLE

    @property
    def can_retry_failed(self) -> bool:
        return self.status in self.RETRYABLE

    # The guard rails: (counter, its limit in percent, what the rate is called).
    GUARD_RAILS = (
        ("complaints", "max_complaint_rate", "complaint rate"),
        ("hard_bounces", "max_hard_bounce_rate", "hard-bounce rate"),
    )

    def messages_sent(self) -> int:
        """What the guard rails' rates count against: the deliveries sent, and those a server
        refused at once as hard bounces (they went out too, and stay counted if retried)."""
        went_out = Q(status=Delivery.Status.SENT) | Q(outcome=Delivery.Outcome.BOUNCED)
        return self.deliveries.filter(went_out).count()

    def guard_rail_crossed(self, sent_at_least: int = 0) -> tuple[str, int]:
        """Why the campaign must pause, if its complaints or hard bounces passed their share
        of the messages sent, once at least `guard_min_sample` are ("" if not), and how many
        messages are known to be sent. That number only grows, so a caller may pass what an
        earlier check returned: the messages are counted again only when a counter could
        pass its limit over it (and over the sample)."""
        sent = None
        for counter, limit_field, label in self.GUARD_RAILS:
            count, limit = getattr(self, counter), Decimal(str(getattr(self, limit_field)))
            if not limit or count * 100 <= limit * max(self.guard_min_sample, sent_at_least):
                continue
            sent = self.messages_sent() if sent is None else sent
            if sent >= self.guard_min_sample and count * 100 > limit * sent:
                reason = (
                    f"Paused: the {label} reached {count * 100 / sent:.2f}% ({count:,} of {sent:,} sent), "
                    f"above the {limit.normalize():f}% limit"
                )
                return reason, sent
        return "", sent_at_least if sent is None else sent

    def active_seconds(self, now: datetime | None = None) -> float:
        """How long the campaign has been running, its pauses left out."""
        running = (now or timezone.now()) - self.running_since if self.running_since else timedelta(0)
        return (self.active_time + running).total_seconds()

    def _transition(self, allowed: tuple[str, ...], **changes) -> bool:
        """Apply `changes` if the campaign is still in one of `allowed`; True if this call won.
        Entering or leaving RUNNING starts or stops the clock of its active time, in the same
        UPDATE (which reads the row as it was, whichever of `allowed` it was in)."""
        now = changes["updated_at"] = timezone.now()
        if changes.get("status") == self.Status.RUNNING:
            changes["running_since"] = now
        elif "status" in changes and self.Status.RUNNING in allowed:
            since = Value(now, models.DateTimeField()) - F("running_since")
            ran = ExpressionWrapper(since, output_field=DurationField())
            changes["active_time"] = F("active_time") + Coalesce(ran, Value(timedelta(0)))
            changes["running_since"] = None
        won = Campaign.objects.filter(pk=self.pk, status__in=allowed).update(**changes) == 1
        self.refresh_from_db()
        return won

    def lock(self) -> None:
        """Lock the campaign's row until the transaction ends (SQLite's IMMEDIATE transactions
        lock the whole database anyway)."""
        list(Campaign.objects.select_for_update().filter(pk=self.pk).values_list("pk"))

    def _enqueue_sending(self) -> None:
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task("campaigns.tasks.send_campaign", self.pk, group=f"campaign-{self.pk}"))

    def launch(self) -> bool:
        """Start sending now, or at `scheduled_at` if that is still ahead. Idempotent."""
        if self.scheduled_at and self.scheduled_at > timezone.now():
            return self._transition((self.Status.DRAFT,), status=self.Status.SCHEDULED)
        won = self._transition(
            (self.Status.DRAFT, self.Status.SCHEDULED), status=self.Status.RUNNING, started_at=timezone.now()
        )
        if won:
            self._enqueue_sending()
        return won

    def finish(self) -> bool:
        """Every delivery is settled (its senders check, under the campaign's lock)."""
        return self._transition((self.Status.RUNNING,), status=self.Status.FINISHED, finished_at=timezone.now())

    def unschedule(self) -> bool:
        return self._transition((self.Status.SCHEDULED,), status=self.Status.DRAFT)

    def pause(self, reason: str = "") -> bool:
        """Stop taking new deliveries; those in flight finish (the page says "Pausing…" until they have)."""
        return self._transition((self.Status.RUNNING,), status=self.Status.PAUSED, pause_reason=reason)

    def resume(self) -> bool:
        won = self._transition(
            (self.Status.PAUSED,), status=self.Status.RUNNING, pause_reason="", consecutive_failures=0
        )
        if won:
            self._enqueue_sending()
        return won

    def cancel(self) -> bool:
        """Stop for good: the deliveries still waiting their turn are dropped (`drop_unsent`)."""
        won = self._transition(self.CANCELLABLE, status=self.Status.CANCELLED, finished_at=timezone.now())
        if won:
            self.drop_unsent()
        return won

    def drop_unsent(self) -> int:
        """Deliveries of a cancelled campaign still waiting for their turn become `cancelled`:
        not sent, and never to be (those in flight finish, and their senders drop what they
        give back). Counted apart from `skipped`, so the page tells the two apart."""
        return self.deliveries.filter(status__in=(Delivery.Status.PENDING, Delivery.Status.DEFERRED)).update(
            status=Delivery.Status.CANCELLED, updated_at=timezone.now()
        )

    def retry_failed(self) -> int:
        """Put failed deliveries back in line; sending picks them up (restarting a finished
        campaign, or once a paused one is resumed). Returns how many were requeued: none for
        a campaign that cannot retry (a cancelled one, say, even if cancelled meanwhile)."""
        with transaction.atomic():
            self.lock()  # against a sender finishing the campaign meanwhile (see sending/loop.py)
            requeued = Delivery.objects.filter(
                campaign_id=self.pk, campaign__status__in=self.RETRYABLE, status=Delivery.Status.FAILED
            ).update(status=Delivery.Status.PENDING, attempts=0, next_attempt_at=None)
            if requeued and (
                self._transition(
                    (self.Status.FINISHED,), status=self.Status.RUNNING, finished_at=None, consecutive_failures=0
                )
                or self.status == self.Status.RUNNING  # its senders may all have ended: one more joins if needed
            ):
                self._enqueue_sending()
        return requeued


class Sender(models.Model):
    """One sending task's hold on a campaign. Several send a campaign at once, on any hosts,
    each claiming its own deliveries under its id, the fencing token (`Delivery.claim_token`).

    The task renews `lease_until` from a thread; a lease that ran out is never renewed, and a
    sender found dead has it set to None (fenced off): from then on its claims are worth
    nothing and recovery decides the fate of its rows (see campaigns/sending/)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="senders")
    owner = models.CharField(max_length=200, help_text='The process, "host:pid".')
    lease_until = models.DateTimeField(null=True, blank=True, help_text="None once it stopped or was fenced off.")
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    sent = models.PositiveIntegerField(default=0, help_text="Messages it sent.")

    class Meta:
        indexes = [models.Index(fields=["campaign", "lease_until"], name="sender_campaign_lease")]

    def __str__(self) -> str:
        return f"sender {self.pk} of campaign {self.campaign_id} ({self.owner})"


class Delivery(models.Model):
    """One message of a campaign to one subscriber: claimed, sent once, and accounted for."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DEFERRED = "deferred", "Deferred"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"  # the subscriber left, or is suppressed, before their turn
        CANCELLED = "cancelled", "Cancelled"  # the campaign was cancelled before its turn: not sent

    class Outcome(models.TextChoices):
        DELIVERED = "delivered", "Delivered"  # as the ESP reported it
        SOFT_BOUNCE = "soft", "Soft bounce"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="deliveries")
    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_reply = models.TextField(blank=True)
    server = models.ForeignKey(SmtpServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message_id = models.CharField(max_length=255, blank=True)
    ambiguous = models.BooleanField(default=False, help_text="The link broke after the final dot: maybe delivered.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The id of the Sender that claimed it: only that sender may send it, and only while its
    # lease stands (see campaigns/sending/leases.py, the final-dot fence).
    claim_token = models.PositiveBigIntegerField(null=True, blank=True)
    # Set just before the final dot goes out: from then on the server may hold the message.
    final_dot_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=10,
        choices=Outcome.choices,
        blank=True,
        db_default="",
        help_text="What became of it once sent, if reported.",
    )
    outcome_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "subscriber"], name="one_delivery_per_subscriber"),
        ]
        indexes = [
            models.Index(fields=["campaign", "status", "id"], name="delivery_campaign_status"),
            models.Index(fields=["campaign", "sent_at"], name="delivery_campaign_sent_at"),
        ]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id} to subscriber {self.subscriber_id}: {self.status}"


class Event(models.Model):
    """Something a connection pool (or a campaign's sender) did or heard, kept for the log.

    Written in bulk off the sending path by `campaigns/eventlog/writer.py`; identical events close
    together (a storm of 421s, say) are stored once with a `count`.
    """

    at = models.DateTimeField(help_text="When it happened (the first time, for an aggregated row).")
    last_at = models.DateTimeField(help_text="When it happened last, for an aggregated row.")
    count = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=24)
    server = models.ForeignKey(SmtpServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    server_name = models.CharField(max_length=100, blank=True)
    campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    # Not a foreign key: the log keeps what happened to a message after it left the outbox.
    outbox_message_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The outbox message (smtp_settings.OutboxMessage) it concerns."
    )
    connection_id = models.PositiveBigIntegerField(null=True, blank=True)
    messages_on_connection = models.PositiveIntegerField(default=0)
    stage = models.CharField(max_length=16, blank=True)
    code = models.PositiveSmallIntegerField(null=True, blank=True)
    enhanced_code = models.CharField(max_length=16, blank=True)
    text = models.TextField(blank=True, help_text="What the server said, as it said it.")
    duration_ms = models.FloatField(null=True, blank=True)
    recipient = models.CharField(max_length=254, blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["at"], name="event_at"),
            models.Index(fields=["kind", "id"], name="event_kind"),
            models.Index(fields=["campaign", "id"], name="event_campaign"),
            models.Index(fields=["server", "id"], name="event_server"),
            models.Index(fields=["code", "id"], name="event_code"),
            models.Index(
                fields=["outbox_message_id", "id"], name="event_outbox", condition=Q(outbox_message_id__isnull=False)
            ),
            # How each connection of a page of the connection timeline ended.
            models.Index(
                fields=["connection_id", "id"], name="event_connection", condition=Q(connection_id__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.server_name}"

    # What a kind is called where people read it; any other reads as its identifier with spaces.
    NAMES = {
        "pool_wait_timeout": "no free connection",
        "report_unparsed": "report not understood",
        "auto_pause": "auto-pause",
    }

    @classmethod
    def name_of(cls, kind: str) -> str:
        """ "idle close" for `idle_close`: the kind as the log, the counts and the filter show it."""
        return cls.NAMES.get(kind, kind.replace("_", " "))

    @property
    def kind_name(self) -> str:
        return self.name_of(self.kind)

    @property
    def connection_label(self) -> str:
        return connection_label(self.connection_id)

    @property
    def outcome(self) -> str:
        """What the pool made of it, where the server's text does not say: the limit a learned
        limit adopted (with what taught it), why a connection was closed; "" otherwise."""
        detail = self.detail or {}
        value, limit = detail.get("value"), detail.get("limit")
        if self.kind == Kind.LEARNED_LIMIT and limit == "msgs_per_conn" and value:
            lengths = detail.get("session_lengths") or [self.messages_on_connection]
            return f"learned: {value:,} messages per connection (the server closed after {min(lengths):,})"
        if self.kind == Kind.LEARNED_LIMIT and limit == "max_conns" and value:
            return f"learned: at most {value:,} connections at once (the server refused one more)"
        if self.kind == Kind.CLOSE and detail.get("reason"):
            return f"closed: {detail['reason']}"
        return ""
