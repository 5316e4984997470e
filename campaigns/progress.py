"""How far a campaign has got: counts per delivery status, rate, ETA (with any wait for a
quota window), hard bounces and complaints with their rates, the last errors, and the servers
it shares with other running campaigns; before its launch, how many it will reach."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Max, Q
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Subscriber
from smtp_settings.models import SmtpServer, Suppression
from smtp_settings.shared_limits import open_connections

RATE_WINDOW_S = 60
LAST_ERRORS = 5

Status = Delivery.Status


def counts_by_campaign(campaign_ids) -> dict[int, dict[str, int]]:
    """{campaign id: {delivery status: count}} for several campaigns in one query."""
    counts: dict[int, dict[str, int]] = {pk: dict.fromkeys(Status.values, 0) for pk in campaign_ids}
    rows = (
        Delivery.objects.filter(campaign_id__in=campaign_ids)
        .values_list("campaign_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for campaign_id, status, n in rows:
        counts[campaign_id][status] = n
    return counts


def reach_by_campaign(campaign_ids) -> dict[int, int]:
    """{campaign id: how many it would go to if launched now} for several campaigns in one
    query: the active subscribers of its lists, less the addresses on the suppression list
    (the ones its senders would skip)."""
    member = "lists__subscribers"
    reachable = Q(**{f"{member}__status": Subscriber.Status.ACTIVE}) & ~Q(
        **{f"{member}__email__in": Suppression.objects.values("email")}
    )
    rows = Campaign.objects.filter(pk__in=campaign_ids).annotate(reach=Count(member, distinct=True, filter=reachable))
    return dict(rows.values_list("pk", "reach"))


@dataclass(frozen=True)
class Sharing:
    """A server of the campaign that other running campaigns send through too."""

    server: SmtpServer
    campaigns: list[Campaign]


@dataclass
class Progress:
    campaign: Campaign
    counts: dict[str, int]
    ambiguous: int = 0
    messages_sent: int = 0  # what the guard rails' rates count against (Campaign.messages_sent)
    rate_per_s: float = 0.0
    last_errors: list = field(default_factory=list)
    waiting_until: datetime | None = None  # every server of the campaign waits for a quota window until then
    shared: list[Sharing] = field(default_factory=list)
    reach: int | None = None  # before the launch: how many it will go to
    connections_open: int | None = None  # while running: to its servers, by every sender and process
    now: datetime = field(default_factory=timezone.now)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Deliveries that went out, failed, or were skipped (their subscriber left, or their
        address is on the suppression list)."""
        return self.counts[Status.SENT] + self.counts[Status.FAILED] + self.counts[Status.SKIPPED]

    @property
    def hard_bounce_rate(self) -> float:
        """Percent of the messages sent."""
        return 100 * self.campaign.hard_bounces / self.messages_sent if self.messages_sent else 0.0

    @property
    def complaint_rate(self) -> float:
        """Percent of the messages sent."""
        return 100 * self.campaign.complaints / self.messages_sent if self.messages_sent else 0.0

    @property
    def in_flight(self) -> int:
        """Claimed by a sender and not settled yet: a pause or cancel lets these finish. A
        sender claims a batch at a time, so most wait for a connection, not on one."""
        return self.counts[Status.SENDING]

    # The counts as the page names them: "sending" would overstate what is on the wire.
    COUNT_LABELS = {Status.SENDING: "Claimed"}
    COUNT_TITLES = {
        Status.SENDING: "Taken by its senders in batches and not settled yet: each goes out when a connection is free",
    }

    @property
    def labelled_counts(self) -> list[tuple[str, str, int, str]]:
        """(status, label, count, explanation) for each delivery status."""
        return [
            (status, self.COUNT_LABELS.get(status, status.capitalize()), count, self.COUNT_TITLES.get(status, ""))
            for status, count in self.counts.items()
        ]

    @property
    def not_sent(self) -> int:
        """What a cancel kept from going out: the deliveries it marked, and any that a sender
        busy when it came gave back unsent (neither will ever be sent)."""
        if not self.campaign.is_cancelled:
            return 0
        return self.total - self.done - self.in_flight

    @property
    def stopping(self) -> bool:
        """Paused or cancelled, but messages claimed before the click are still going out."""
        return self.in_flight > 0 and (self.campaign.is_paused or self.campaign.is_cancelled)

    @property
    def status_label(self) -> str:
        if self.stopping:
            return "Pausing…" if self.campaign.is_paused else "Cancelling…"
        return self.campaign.get_status_display()

    @property
    def poll_every_s(self) -> int:
        """How often the page asks for the block again: every 2 s while the campaign sends, or
        after a pause or cancel until nothing is in flight; every 10 s before its launch (a
        scheduled one starts on its own) and while paused, since it may be launched or resumed
        elsewhere (another tab, the command line); every 60 s once it is over, since a retry
        from elsewhere restarts a finished campaign and bounce and complaint reports go on
        changing its counters."""
        if self.campaign.is_running or self.in_flight > 0:
            return 2
        if self.campaign.is_editable or self.campaign.is_paused:
            return 10
        return 60

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def percent(self) -> float:
        return 100 * self.done / self.total if self.total else 0.0

    @property
    def wait(self) -> timedelta:
        """How long sending still waits for a quota window."""
        if self.waiting_until is None or self.waiting_until <= self.now:
            return timedelta(0)
        return self.waiting_until - self.now

    @property
    def resumes_another_day(self) -> bool:
        return self.waiting_until is not None and (
            timezone.localdate(self.waiting_until) != timezone.localdate(self.now)
        )

    @property
    def eta(self) -> timedelta | None:
        """The wait, if any, then the rest at the current rate."""
        if not self.rate_per_s or not self.remaining:
            return None
        return self.wait + timedelta(seconds=round(self.remaining / self.rate_per_s))

    @property
    def eta_text(self) -> str:
        """ "1 h 05 min", "4 min 10 s", "12 s"."""
        if self.eta is None:
            return ""
        minutes, seconds = divmod(int(self.eta.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        if days:
            return f"{days} d {hours} h"
        if hours:
            return f"{hours} h {minutes:02d} min"
        return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _rate_per_s(campaign: Campaign, deliveries, counts: dict[str, int], now: datetime) -> float:
    """Messages a second: while running, over the last minute (or since it last started
    running, if that is sooner); otherwise on average over the time it ran, its pauses left
    out. While the campaign waits for a quota window, over the minute before the last
    message: the rate it will send at again."""
    if campaign.started_at is None:
        return 0.0
    if not campaign.is_running:
        seconds = campaign.active_seconds(now)
        return counts[Status.SENT] / seconds if seconds > 0 else 0.0
    end = now
    if campaign.waiting_reason:
        end = deliveries.aggregate(last=Max("sent_at"))["last"] or now
    seconds = min(RATE_WINDOW_S, (end - (campaign.running_since or campaign.started_at)).total_seconds())
    recent = deliveries.filter(sent_at__gte=end - timedelta(seconds=seconds), sent_at__lte=end).count()
    return recent / seconds if seconds > 0 else 0.0


def shared_servers(campaign: Campaign) -> list[Sharing]:
    """The campaign's servers that other running campaigns use too, with those campaigns."""
    if not campaign.is_running:
        return []
    uses = (
        Campaign.servers.through.objects.filter(
            smtpserver__in=campaign.servers.all(), campaign__status=Campaign.Status.RUNNING
        )
        .exclude(campaign=campaign)
        .select_related("smtpserver", "campaign")
        .defer("campaign__html_body", "campaign__text_body")  # only their names are shown
        .order_by("smtpserver__name", "campaign__name", "campaign_id")
    )
    shared: dict[int, Sharing] = {}
    for use in uses:
        shared.setdefault(use.smtpserver_id, Sharing(use.smtpserver, [])).campaigns.append(use.campaign)
    return list(shared.values())


def connections_open(campaign: Campaign) -> int:
    """Connections open to the campaign's enabled servers, from every process (other
    campaigns' and the outbox's among them, if they share a server)."""
    return sum(open_connections(server) for server in campaign.servers.filter(enabled=True))


def progress(campaign: Campaign) -> Progress:
    deliveries = Delivery.objects.filter(campaign=campaign)
    counts = counts_by_campaign([campaign.pk])[campaign.pk]
    now = timezone.now()
    return Progress(
        reach=reach_by_campaign([campaign.pk])[campaign.pk] if campaign.is_editable else None,
        connections_open=connections_open(campaign) if campaign.is_running else None,
        campaign=campaign,
        counts=counts,
        ambiguous=deliveries.filter(ambiguous=True).count(),
        messages_sent=campaign.messages_sent(),
        rate_per_s=_rate_per_s(campaign, deliveries, counts, now),
        waiting_until=campaign.waiting_until if campaign.waiting_reason else None,
        shared=shared_servers(campaign),
        now=now,
        last_errors=list(
            deliveries.filter(status__in=(Status.FAILED, Status.DEFERRED))
            .exclude(updated_at=None)
            .select_related("subscriber")
            .order_by("-updated_at", "-pk")[:LAST_ERRORS]  # a batch's outcomes share their time
        ),
    )
