"""A campaign's sending over time as a picture: messages sent per bucket, with its 421s,
reconnects and rotations as marks above them (the geometry is `project.charts`')."""

from campaigns.eventlog.filters import campaign_timeline
from campaigns.models import Campaign
from project.charts import Chart, Series, Timeline, bar_chart, count, per_bucket, span

SENT = Series("sent", "sent", "sent", "{n} sent")
MARKS = [
    Series("closed_421", "421: session closed", "mark-421", "{n} × 421", lane="421", shape="triangle", guide=True),
    Series("reconnects", "reconnect", "mark-reconnect", "{n} × reconnect", lane="reconn.", shape="circle"),
    Series("rotations", "rotation at the cap", "mark-rotation", "{n} × rotation", lane="rotation", shape="square"),
]


def sending_chart(timeline: Timeline) -> Chart:
    description = (
        f"{span(timeline)}: {count(timeline.total('sent'))} sent, "
        f"{count(timeline.total('closed_421'))} sessions closed with a 421, "
        f"{count(timeline.total('reconnects'))} reconnects, "
        f"{count(timeline.total('rotations'))} rotations at the cap."
    )
    title = f"Messages sent per {per_bucket(timeline)}, with 421s, reconnects and rotations"
    return bar_chart(timeline, title, description, [SENT], MARKS, unit="messages")


def campaign_chart(campaign: Campaign) -> Chart | None:
    """The chart of the campaign's last day of sending; None before it sent or heard anything."""
    timeline = campaign_timeline(campaign)
    return sending_chart(timeline) if timeline else None
