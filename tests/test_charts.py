"""The charts' geometry (project/charts.py): a bucket size to fit the run's length, the axis
labelled with its unit, and marks as shapes with what the server said."""

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.eventlog.charts import MARKS, SENT
from project.charts import LANE_STEP, MAX_BARS, Series, Timeline, bar_chart, per_bucket

START = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "length, seconds, name",
    [
        (timedelta(seconds=21), 1, "second"),
        (timedelta(minutes=3), 2, "2 seconds"),
        (timedelta(minutes=9), 5, "5 seconds"),
        (timedelta(minutes=50), 30, "30 seconds"),
        (timedelta(minutes=90), 60, "minute"),
        (timedelta(hours=6), 300, "5 minutes"),
        (timedelta(hours=24), 900, "15 minutes"),
        (timedelta(days=3), 900, "15 minutes"),  # a day at most
    ],
)
def test_the_bucket_size_follows_the_runs_length(length, seconds, name):
    timeline = Timeline.covering(START, START + length)
    assert timeline.seconds == seconds and per_bucket(timeline) == name
    assert len(timeline.buckets) <= MAX_BARS
    assert timeline.end >= START + length and timeline.start >= START + length - timedelta(hours=24, seconds=seconds)


def test_a_21_second_run_is_21_bars_not_one_block():
    timeline = Timeline.covering(START, START + timedelta(seconds=20))
    timeline.add("sent", [(START + timedelta(seconds=s), 1) for s in range(21)])
    chart = bar_chart(timeline, "t", "d", [Series("sent", "sent", "sent", "{n} sent")], unit="messages")

    assert len(chart.bars) == 21 and {bar.title for bar in chart.bars} >= {"10:00:00: 1 sent", "10:00:20: 1 sent"}
    assert [tick.label for tick in chart.x_ticks][:2] == ["10:00:00", "10:00:04"]
    assert chart.x_caption == "UTC time; one bar per second" and chart.y_caption == "messages"


def test_moments_as_sqlite_groups_them_land_in_their_buckets():
    timeline = Timeline.covering(START, START + timedelta(seconds=30))
    timeline.add("sent", [("2026-11-26 10:00:05", 2), ("2026-11-26 10:00:29", 1), ("2026-11-26 09:00:00", 4)])
    assert [bucket.counts["sent"] for bucket in timeline.buckets][:6] == [4, 0, 0, 0, 0, 2]
    assert timeline.buckets[29].counts["sent"] == 1


def test_a_mark_keeps_the_first_text_bounded_and_its_total():
    timeline = Timeline.covering(START, START + timedelta(seconds=10))
    timeline.add_noted("closed_421", [(START, 3, "421 first\r\n" + "y" * 500), (START, 2, "421 second")])
    chart = bar_chart(timeline, "t", "d", [], [Series("closed_421", "421", "mark-421", "{n} × 421", lane="421")])

    [mark] = chart.lanes[0].marks
    assert mark.title.startswith("10:00:00: 5 × 421: 421 first yyy") and len(mark.title.split(": ", 2)[2]) == 200
    assert mark.path.startswith("M") and mark.path.endswith("z")


def test_the_lanes_labels_stand_clear_of_the_y_axis_labels():
    timeline = Timeline.covering(START, START + timedelta(seconds=20))
    timeline.add("sent", [(START, 1000)])
    chart = bar_chart(timeline, "t", "d", [SENT], MARKS, unit="messages")

    # Both labels sit 4 px below their y: "rotation" over "1,000" as far apart as the lanes' own labels.
    [*_, rotation], [*_, top] = chart.lanes, chart.y_ticks
    assert rotation.label == "rotation" and top.label == "1,000"
    assert top.at - rotation.y >= LANE_STEP
