"""The outbox's last day as a picture: per bucket, the messages sent, and those whose last
attempt left them deferred or failed, or skipped (every recipient suppressed); the geometry
is `project.charts`'."""

from datetime import datetime

from django.db.models import Count, Min
from django.utils import timezone

from project.charts import WINDOW, Chart, Series, Timeline, bar_chart, count, per_bucket, span
from smtp_settings.models import OutboxMessage

Status = OutboxMessage.Status
BARS = [
    Series(Status.SENT, "sent", "sent", "{n} sent"),
    Series(Status.DEFERRED, "deferred", "deferred", "{n} deferred"),
    Series(Status.FAILED, "failed", "failed", "{n} failed"),
    Series(Status.SKIPPED, "skipped", "skipped", "{n} skipped"),
]
UNSENT = (Status.DEFERRED, Status.FAILED, Status.SKIPPED)


def outbox_timeline(now: datetime | None = None) -> Timeline | None:
    """Up to `now`, from the first message sent, deferred, failed or skipped in the last
    WINDOW: the sent ones when they were sent, the others when they were last tried. None
    without any."""
    end = now or timezone.now()
    sent = OutboxMessage.objects.filter(sent_at__gte=end - WINDOW)
    unsent = OutboxMessage.objects.filter(status__in=UNSENT, updated_at__gte=end - WINDOW)
    firsts = [sent.aggregate(first=Min("sent_at"))["first"], unsent.aggregate(first=Min("updated_at"))["first"]]
    if not any(firsts):
        return None
    timeline = Timeline.covering(min(moment for moment in firsts if moment), end)
    per_moment = sent.filter(sent_at__gte=timeline.start).annotate(moment=timeline.moment_of("sent_at"))
    timeline.add(Status.SENT, per_moment.order_by().values_list("moment").annotate(Count("id")))
    per_moment = unsent.filter(updated_at__gte=timeline.start).annotate(moment=timeline.moment_of("updated_at"))
    for moment, status, n in per_moment.order_by().values_list("moment", "status").annotate(Count("id")):
        timeline.add(status, [(moment, n)])
    return timeline


def outbox_chart(now: datetime | None = None) -> Chart | None:
    timeline = outbox_timeline(now)
    if timeline is None:
        return None
    totals = ", ".join(f"{count(timeline.total(series.name))} {series.label}" for series in BARS)
    title = f"Messages sent, deferred, failed and skipped per {per_bucket(timeline)}"
    return bar_chart(timeline, title, f"{span(timeline)}: {totals}.", BARS, unit="messages")
