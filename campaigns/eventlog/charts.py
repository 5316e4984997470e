"""A campaign's sending over time as a picture: messages sent per bucket, with its 421s and
reconnects as marks above them (the geometry is `project.charts`')."""

from campaigns.eventlog.filters import campaign_timeline
from campaigns.models import Campaign
from project.charts import Chart, Series, Timeline, bar_chart, count, per_bucket, span

SENT = Series("sent", "sent", "sent", "{n} sent")
MARKS = [
    Series("closed_421", "421: session closed", "mark-421", "{n} × 421", lane="421", guide=True),
    Series("reconnects", "reconnect", "mark-reconnect", "{n} reconnects", lane="reconn."),
]


def sending_chart(timeline: Timeline) -> Chart:
    description = (
        f"{span(timeline)}: {count(timeline.total('sent'))} sent, "
        f"{count(timeline.total('closed_421'))} sessions closed with a 421, "
        f"{count(timeline.total('reconnects'))} reconnects."
    )
    title = f"Messages sent per {per_bucket(timeline)}, with 421s and reconnects"
    return bar_chart(timeline, title, description, [SENT], MARKS)


def campaign_chart(campaign: Campaign) -> Chart | None:
    """The chart of the campaign's last day of sending; None before it sent or heard anything."""
    timeline = campaign_timeline(campaign)
    return sending_chart(timeline) if timeline else None
