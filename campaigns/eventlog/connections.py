"""The connection timeline: one lane per SMTP connection (when it opened, how many messages it
carried and how it ended) for a campaign or a time range, as a picture drawn by
`templates/logs/_connections.html`.

It is built from the pool's events (smtp_settings/events.py): a connection's `connect`, then
the one event of CONNECTION_ENDS that says how it ended, both carrying its id. Thousands of
connections are read a page at a time: at most PAGE_LANES, the oldest first after `after` (a
keyset on the connect's id, never OFFSET). A page costs five bounded queries: the time
range's ids (once, from the `at` index), its connects (the (kind, id) or (campaign, id)
index, within those ids), their ends and what
the ones without an end carried so far (the (connection_id, id) index), and the scope's ends
(of connections seen opening) counted per kind.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django import forms
from django.db.models import Count, Exists, Max, OuterRef
from django.utils import timezone

from campaigns.eventlog.filters import ScopeForm, time_window, within
from campaigns.models import Event
from project.charts import LegendItem, clock, count, legend, note, shape_path
from smtp_settings.events import CONNECTION_ENDS, Kind, connection_label

PAGE_LANES = 100
DEFAULT_WINDOW = timedelta(hours=1)  # without a campaign or a start

ERROR = ("error", "end-error", "diamond")
# How an end is drawn: its name in the legend, its class, its mark's shape.
END_STYLES = {
    Kind.ROTATION: ("rotation at the cap", "end-rotation", "square"),
    Kind.SESSION_CLOSED_421: ("421", "end-421", "triangle"),
    Kind.IDLE_CLOSE: ("idle close", "end-idle", "circle"),
    Kind.AGE_CLOSE: ("age", "end-age", "diamond"),
    Kind.CLOSE: ("closed", "end-close", "circle"),
    Kind.NETWORK_ERROR: ERROR,
    Kind.TIMEOUT: ERROR,
    Kind.PROTOCOL_ERROR: ERROR,
    Kind.AMBIGUOUS: ERROR,
}
OPEN = ("no end yet", "end-open", "")


class ConnectionsForm(ScopeForm):
    """The timeline's scope; `after` is the keyset bound of the next page."""

    after = forms.IntegerField(min_value=0, required=False, widget=forms.HiddenInput)
    FILTERS = ("server", "campaign", "since", "until")
    field_order = FILTERS


@dataclass
class Lane:
    """One connection, as its events tell it."""

    connect_id: int  # the connect event's id: the keyset
    connection_id: int
    server_name: str
    opened: datetime
    messages: int = 0
    ended: datetime | None = None
    last_seen: datetime | None = None  # without an end: its last event
    end_kind: str = ""
    stage: str = ""
    text: str = ""
    detail: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return connection_label(self.connection_id)

    @property
    def until(self) -> datetime:
        return self.ended or self.last_seen or self.opened

    @property
    def style(self) -> tuple[str, str, str]:
        return END_STYLES.get(self.end_kind, OPEN)

    @property
    def how(self) -> str:
        """How it ended, in words, with what the server said (bounded)."""
        kind, detail = self.end_kind, self.detail
        if not kind:
            return "no end reported yet: still open, or its process stopped"
        if kind == Kind.ROTATION:
            return f"rotated at the cap of {count(detail.get('cap', self.messages))} messages"
        if kind == Kind.IDLE_CLOSE:
            return f"closed after {detail.get('idle_timeout', '?')} s idle"
        if kind == Kind.AGE_CLOSE:
            return f"retired at {detail.get('max_conn_age', '?')} s old"
        if kind == Kind.CLOSE:
            return f"closed: {detail.get('reason', '')}"
        at = f" at {self.stage}" if self.stage else ""
        said = f": {note(self.text)}" if self.text else ""
        return f"{Event.name_of(kind)}{at}{said}"


@dataclass
class LanePage:
    lanes: list[Lane]
    after: int | None  # ?after= this for the next page; None on the last
    ends: list[tuple[str, int]]  # (kind's name, how many) for the whole scope
    since: datetime | None
    until: datetime | None


def _scoped(cleaned: dict, since, until):
    """Connection events in the scope: its range of ids is read once, for lanes and totals."""
    events = Event.objects.filter(connection_id__isnull=False)
    if cleaned.get("server"):
        events = events.filter(server=cleaned["server"])
    if cleaned.get("campaign"):
        events = events.filter(campaign=cleaned["campaign"])
    return within(events, since, until, id_range=True)


def lane_page(cleaned: dict, after: int | None = None, now: datetime | None = None) -> LanePage:
    since, until = time_window(cleaned, now, DEFAULT_WINDOW)
    scoped = _scoped(cleaned, since, until)
    connects = scoped.filter(kind=Kind.CONNECT)
    if after is not None:
        connects = connects.filter(id__gt=after)
    rows = connects.order_by("id").values_list("id", "connection_id", "server_name", "at")[: PAGE_LANES + 1]
    lanes = [Lane(*row) for row in rows]
    more = len(lanes) > PAGE_LANES
    lanes = lanes[:PAGE_LANES]
    by_id = {lane.connection_id: lane for lane in lanes}
    if lanes:
        # An end comes after its connect; ids come back in another process' log only by chance.
        mine = Event.objects.filter(connection_id__in=by_id, id__gt=lanes[0].connect_id)
        ends = mine.filter(kind__in=CONNECTION_ENDS).order_by("id")
        for kind, connection_id, at, messages, stage, text, detail in ends.values_list(
            "kind", "connection_id", "at", "messages_on_connection", "stage", "text", "detail"
        ):
            lane = by_id[connection_id]
            if not lane.end_kind:  # the first end is the end
                lane.end_kind, lane.ended, lane.messages, lane.stage, lane.text = kind, at, messages, stage, text
                lane.detail = detail or {}
        still = [lane.connection_id for lane in lanes if not lane.end_kind]
        if still:
            seen = mine.filter(connection_id__in=still).order_by().values_list("connection_id")
            for connection_id, last, messages in seen.annotate(Max("last_at"), Max("messages_on_connection")):
                by_id[connection_id].last_seen, by_id[connection_id].messages = last, messages
    # Only the ends of connections seen opening: an ESP's API session reports its errors with
    # its id but no connect, and has no lane.
    opened = Event.objects.filter(connection_id=OuterRef("connection_id"), kind=Kind.CONNECT)
    totals = scoped.filter(kind__in=CONNECTION_ENDS).filter(Exists(opened))
    totals = totals.order_by().values_list("kind").annotate(n=Count("id"))
    ends: dict[str, int] = {}
    for kind, n in totals:
        name = END_STYLES[kind][0]
        ends[name] = ends.get(name, 0) + n
    return LanePage(
        lanes,
        after=lanes[-1].connect_id if more else None,
        ends=sorted(ends.items(), key=lambda item: -item[1]),
        since=since,
        until=until,
    )


# -- the picture --

WIDTH = 720
GUTTER = 92  # the lanes' labels
RIGHT = WIDTH - 96  # room after a lane for its message count, and why a `close` closed it
LEGEND_Y = 12
AXIS_Y = 32
FIRST_LANE_Y = 44
LANE_STEP = 14
LANE_HEIGHT = 8
X_TICKS = 6


@dataclass(frozen=True)
class DrawnLane:
    y: int
    x: float
    width: float
    css: str
    path: str  # the end's mark
    label: str
    messages: str  # its count, and why a `close` closed it
    count_x: float
    title: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass
class Picture:
    title: str
    description: str
    lanes: list[DrawnLane]
    legend: list[LegendItem]
    ticks: list[Tick]
    height: int
    width: int = WIDTH
    gutter: int = GUTTER
    legend_y: int = LEGEND_Y
    axis_y: int = AXIS_Y


def picture(page: LanePage) -> Picture | None:
    """The lanes of `page` on one time axis, oldest at the top; None without any."""
    if not page.lanes:
        return None
    start = min(lane.opened for lane in page.lanes)
    end = max(lane.until for lane in page.lanes)
    span_s = max((end - start).total_seconds(), 1)
    scale = (RIGHT - GUTTER) / span_s
    with_seconds = span_s < 3600

    def x_of(moment: datetime) -> float:
        return GUTTER + (moment - start).total_seconds() * scale

    drawn = []
    for n, lane in enumerate(page.lanes):
        y = FIRST_LANE_Y + n * LANE_STEP
        left, right = x_of(lane.opened), x_of(lane.until)
        _, css, shape = lane.style
        messages = count(lane.messages) if lane.end_kind else f"≥ {count(lane.messages)}"
        why = lane.detail.get("reason", "") if lane.end_kind == Kind.CLOSE else ""
        title = (
            f"Connection {lane.label} to {lane.server_name}: opened {clock(lane.opened, True)}, "
            f"{messages} message{'' if lane.messages == 1 else 's'}, "
            + (f"ended {clock(lane.ended, True)}: {lane.how}" if lane.ended else lane.how)
        )
        drawn.append(
            DrawnLane(
                y,
                round(left, 1),
                round(max(right - left, 2), 1),
                css,
                shape_path(shape, right, y + LANE_HEIGHT // 2) if shape else "",
                lane.label,
                f"{messages} · {why}" if why else messages,
                round(max(right, left + 2) + 9, 1),
                title,
            )
        )
    ticks = []
    for n in range(X_TICKS + 1):
        moment = start + timedelta(seconds=span_s * n / X_TICKS)
        ticks.append(Tick(round(GUTTER + (RIGHT - GUTTER) * n / X_TICKS, 1), clock(moment, with_seconds)))
    summary = ", ".join(f"{count(n)} {name}" for name, n in page.ends) or "none ended yet"
    description = (
        f"{len(page.lanes)} connections opened from {timezone.localtime(start):%Y-%m-%d %H:%M:%S} "
        f"({timezone.localtime(start):%Z}). How the connections in scope ended: {summary}."
    )
    return Picture(
        "Connections: one lane each, from its opening to its end",
        description,
        drawn,
        legend([*dict.fromkeys(END_STYLES.values()), OPEN]),
        ticks,
        height=FIRST_LANE_Y + len(drawn) * LANE_STEP + 8,
    )
