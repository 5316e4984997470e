"""How far a campaign has got: counts per delivery status, rate, ETA and the last errors."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from campaigns.models import Campaign, Delivery

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


@dataclass
class Progress:
    counts: dict[str, int]
    ambiguous: int = 0
    rate_per_s: float = 0.0
    last_errors: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return self.counts[Status.SENT] + self.counts[Status.FAILED] + self.counts[Status.SKIPPED]

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def percent(self) -> float:
        return 100 * self.done / self.total if self.total else 0.0

    @property
    def eta(self) -> timedelta | None:
        if not self.rate_per_s or not self.remaining:
            return None
        return timedelta(seconds=round(self.remaining / self.rate_per_s))

    @property
    def eta_text(self) -> str:
        """ "1 h 05 min", "4 min 10 s", "12 s"."""
        if self.eta is None:
            return ""
        minutes, seconds = divmod(int(self.eta.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        if hours:
            return f"{hours} h {minutes:02d} min"
        return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _rate_per_s(campaign: Campaign, deliveries, counts: dict[str, int]) -> float:
    """Messages a second: over the last minute while running (or since the start, if that is
    sooner), over the whole run once it is over."""
    now = timezone.now()
    if campaign.started_at is None:
        return 0.0
    if campaign.finished_at:
        seconds = (campaign.finished_at - campaign.started_at).total_seconds()
        return counts[Status.SENT] / seconds if seconds > 0 else 0.0
    seconds = min(RATE_WINDOW_S, (now - campaign.started_at).total_seconds())
    recent = deliveries.filter(sent_at__gte=now - timedelta(seconds=seconds)).count()
    return recent / seconds if seconds > 0 else 0.0


def progress(campaign: Campaign) -> Progress:
    deliveries = Delivery.objects.filter(campaign=campaign)
    counts = counts_by_campaign([campaign.pk])[campaign.pk]
    return Progress(
        counts=counts,
        ambiguous=deliveries.filter(ambiguous=True).count(),
        rate_per_s=_rate_per_s(campaign, deliveries, counts),
        last_errors=list(
            deliveries.filter(status__in=(Status.FAILED, Status.DEFERRED))
            .exclude(updated_at=None)
            .select_related("subscriber")
            .order_by("-updated_at")[:LAST_ERRORS]
        ),
    )
