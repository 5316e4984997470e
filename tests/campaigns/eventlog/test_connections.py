"""The connection timeline (campaigns/eventlog/connections.py): one lane per SMTP connection,
from the pool's own events, for a campaign or a time range, a page at a time."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns import eventlog
from campaigns.eventlog import connections
from campaigns.models import Event
from smtp_settings.events import Kind, connection_ids
from smtp_settings.pool import close_all_pools
from tests.campaigns.test_sending import make_campaign, start_sending

TIMELINE = reverse("logs:connections")

pytestmark = pytest.mark.django_db


def lanes_of(html: str) -> list[tuple[str, str]]:
    """(class, tooltip) of each lane drawn."""
    return [(css, unescape(title)) for css, title in re.findall(r'<g class="lane (end-[\w-]+)"><title>([^<]*)', html)]


def connection(server_name="ses", at=None, ends=None, campaign=None, **end):
    """The events of one connection: its connect `at`, and its end `ends` seconds later."""
    at = at or timezone.now() - timedelta(minutes=5)
    number = connection_ids.next()
    known = {"server_name": server_name, "connection_id": number, "campaign": campaign}
    rows = [Event(at=at, last_at=at, kind=Kind.CONNECT, **known)]
    if ends is not None:
        moment = at + timedelta(seconds=ends)
        rows.append(Event(at=moment, last_at=moment, **known, **end))
    Event.objects.bulk_create(rows)
    return number


def test_the_timeline_requires_login(client):
    response = client.get(TIMELINE)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


@pytest.mark.parametrize(
    "query, named",
    [("since=yesterday", "From"), ("until=0001-01-01T00:00", "Until"), ("since=9999-12-31T23:59", "From")],
)
def test_bad_scope_is_a_400_naming_the_field(viewer_client, query, named):
    response = viewer_client.get(f"{TIMELINE}?{query}")
    assert response.status_code == 400 and named in response.content.decode()


def test_each_lane_says_how_its_connection_ended(viewer_client):
    opened = timezone.now().replace(microsecond=0) - timedelta(minutes=10)
    said = "421 4.7.0 <b>Too many</b> messages " + "z" * 300
    connection(at=opened, ends=9, kind=Kind.ROTATION, messages_on_connection=350, detail={"cap": 350})
    connection(at=opened, ends=4, kind=Kind.SESSION_CLOSED_421, messages_on_connection=12, stage="MAIL", text=said)
    connection(at=opened, ends=60, kind=Kind.IDLE_CLOSE, messages_on_connection=3, detail={"idle_timeout": 30})
    connection(at=opened, ends=2, kind=Kind.NETWORK_ERROR, messages_on_connection=1, stage="DATA", text="reset")
    connection(at=opened, ends=5, kind=Kind.CLOSE, messages_on_connection=7, detail={"reason": "surplus"})
    connection(at=opened)  # still open

    html = viewer_client.get(TIMELINE).content.decode()
    lanes = lanes_of(html)

    assert [css for css, _ in lanes] == ["end-rotation", "end-421", "end-idle", "end-error", "end-close", "end-open"]
    ended = timezone.localtime(opened) + timedelta(seconds=9)
    assert lanes[0][1].endswith(f"350 messages, ended {ended:%H:%M:%S}: rotated at the cap of 350 messages")
    assert "12 messages, ended" in lanes[1][1] and "421 at MAIL: 421 4.7.0 <b>Too many</b> messages zzz" in lanes[1][1]
    assert len(lanes[1][1].split(": ", 2)[2].split("421 at MAIL: ")[1]) == 200  # bounded
    assert "<b>" not in html  # escaped
    assert lanes[2][1].endswith("closed after 30 s idle") and lanes[3][1].endswith("network error at DATA: reset")
    assert lanes[4][1].endswith("closed: surplus")
    assert '<text class="count" x="' in html and ">7 · surplus</text>" in html  # why, without hovering
    assert "≥ 0 messages" in lanes[5][1]
    assert lanes[5][1].endswith("no end reported yet: still open, or its process stopped")
    assert re.search(r"<dt>421</dt><dd>1</dd>", html) and "<dt>rotation at the cap</dt><dd>1</dd>" in html


def test_without_a_campaign_or_start_the_timeline_covers_the_last_hour(viewer_client):
    connection(at=timezone.now() - timedelta(hours=2), ends=1, kind=Kind.ROTATION)
    recent = connection(at=timezone.now() - timedelta(minutes=30), ends=1, kind=Kind.ROTATION)

    page = viewer_client.get(TIMELINE).context["page"]

    assert [lane.connection_id for lane in page.lanes] == [recent]


def test_ends_of_sessions_never_seen_open_are_not_counted(viewer_client):
    """An ESP's API session reports its network errors, timeouts and ambiguous sends with its
    id but never a connect: it has no lane, so it is not among how the connections ended."""
    connection(ends=1, kind=Kind.ROTATION)
    at = timezone.now() - timedelta(minutes=5)
    Event.objects.bulk_create(
        Event(at=at, last_at=at, kind=kind, server_name="esp", connection_id=connection_ids.next())
        for kind in (Kind.NETWORK_ERROR, Kind.TIMEOUT, Kind.AMBIGUOUS)
    )

    page = viewer_client.get(TIMELINE).context["page"]

    assert len(page.lanes) == 1 and page.ends == [("rotation at the cap", 1)]


def test_a_campaign_shows_all_its_connections_and_no_others(viewer_client, campaign):
    ours = connection(at=timezone.now() - timedelta(days=3), campaign=campaign, ends=1, kind=Kind.AGE_CLOSE)
    connection(ends=1, kind=Kind.ROTATION)

    page = viewer_client.get(f"{TIMELINE}?campaign={campaign.pk}").context["page"]

    assert [lane.connection_id for lane in page.lanes] == [ours]


def test_pages_go_later_without_overlap(viewer_client, monkeypatch):
    monkeypatch.setattr(connections, "PAGE_LANES", 3)
    start = timezone.now() - timedelta(minutes=30)
    numbers = [connection(at=start + timedelta(seconds=n), ends=1, kind=Kind.ROTATION) for n in range(7)]

    seen, url = [], TIMELINE
    for _ in range(3):
        response = viewer_client.get(url)
        seen.append([lane.connection_id for lane in response.context["page"].lanes])
        later = re.search(r'href="([^"]+)">Later connections', response.content.decode())
        url = unescape(later[1]) if later else None
    assert seen == [numbers[:3], numbers[3:6], numbers[6:]] and url is None


def test_a_page_costs_a_bounded_number_of_queries(viewer_client, django_assert_max_num_queries):
    for n in range(50):
        connection(ends=n % 7, kind=Kind.ROTATION if n % 2 else Kind.SESSION_CLOSED_421, text="421 bye")
    connection()
    with django_assert_max_num_queries(12):  # the session, the user, the form's choices, and the page's few
        assert len(viewer_client.get(TIMELINE).context["page"].lanes) == 51


def test_the_log_and_the_campaign_link_to_the_timeline(viewer_client, campaign):
    log = viewer_client.get(f"{reverse('logs:list')}?campaign={campaign.pk}&kind=421").content.decode()
    panel = viewer_client.get(reverse("logs:campaign", args=[campaign.pk])).content.decode()
    assert f'href="{TIMELINE}?campaign={campaign.pk}">Connection timeline</a>' in log
    assert f'href="{TIMELINE}?campaign={campaign.pk}">Connection timeline</a>' in panel


@pytest.fixture
def campaign(make_server):
    return make_campaign([make_server(name="ses")], 3)


@pytest.mark.django_db(transaction=True)
def test_a_real_campaign_through_a_capped_server_has_a_lane_per_session(viewer_client, smtp_sandbox, make_server):
    """A real pool against the sandbox, capped at 50 messages a session: every session the
    server saw is a lane, ended by its 421 or by rotating before the learned cap, and the lanes
    carried every message the server accepted."""
    eventlog.flush()
    sandbox = smtp_sandbox(max_msgs_per_session=50, pipelining=True)
    server = make_server(port=sandbox.port, max_conns=3, max_msgs_per_conn=0)
    campaign = make_campaign([server], 400)

    start_sending(campaign)
    close_all_pools()  # the idle ones close too
    eventlog.flush()

    page = viewer_client.get(f"{TIMELINE}?campaign={campaign.pk}").context["page"]
    lanes = page.lanes
    assert len(lanes) == sandbox.summary()["sessions"]
    assert sum(lane.messages for lane in lanes) == len(sandbox.received) == 400
    ends = {lane.end_kind for lane in lanes}
    assert Kind.SESSION_CLOSED_421 in ends and Kind.ROTATION in ends and "" not in ends
    assert {lane.messages for lane in lanes if lane.end_kind == Kind.SESSION_CLOSED_421} == {50}
    # a rotation comes at the learned cap (45), or later on a session that passed it before the cap was learned
    assert all(45 <= lane.messages <= 50 for lane in lanes if lane.end_kind == Kind.ROTATION)
    assert all("Maximum message count" in lane.how for lane in lanes if lane.end_kind == Kind.SESSION_CLOSED_421)
    closed = viewer_client.get(f"{TIMELINE}?campaign={campaign.pk}").content.decode()
    shut = [lane for lane in lanes if lane.end_kind == Kind.CLOSE]
    assert shut and re.findall(r'<text class="count" [^>]+>(\d+ · shutdown)</text>', closed) == [
        f"{lane.messages} · shutdown" for lane in shut
    ]
    assert dict(page.ends)["421"] == sandbox.summary()["replied_421"]
