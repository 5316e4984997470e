"""The event log page: filters, keyset pages, the live tail, counts per kind, the CSV export,
a campaign's events and chart; server text shown as text, never as HTML."""

import csv
import dataclasses
import io
import re
from datetime import timedelta
from html import unescape

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns import eventlog
from campaigns.eventlog import filters, panel
from campaigns.models import Campaign, Delivery, Event
from smtp_settings.events import Kind
from smtp_settings.sandbox import SES_421
from tests.campaigns.test_sending import make_campaign, start_sending

LOG = reverse("logs:list")
EXPORT = reverse("logs:export")

pytestmark = pytest.mark.django_db


def make_events(n: int = 1, ago: timedelta = timedelta(minutes=1), **fields) -> list[Event]:
    """`n` events, one second apart, the last `ago` before now."""
    last = timezone.now() - ago
    rows = []
    for i in range(n):
        at = last - timedelta(seconds=n - 1 - i)
        at = fields.get("at", at)
        rows.append(Event(**({"at": at, "last_at": at, "kind": Kind.CONNECT, "server_name": "ses"} | fields)))
    return Event.objects.bulk_create(rows)


def shown_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="event-(\d+)"', response.content.decode())]


def counts(response) -> dict[str, int]:
    return dict(response.context["counts"])


@pytest.fixture
def campaign(make_server):
    return make_campaign([make_server(name="ses")], 3)


# Access and input


@pytest.mark.parametrize("url", [LOG, EXPORT, "/logs/campaign/1/"])
def test_the_log_requires_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_logs_is_a_link_in_the_navigation_marked_current(viewer_client):
    html = viewer_client.get(LOG).content.decode()
    assert f'<a href="{LOG}" aria-current="page">Logs</a>' in html


@pytest.mark.parametrize(
    "query, named",
    [
        ("code=abc", "Reply code"),
        ("code=999", "Reply code"),
        ("since=yesterday", "From"),
        ("until=2026-13-45T10:00", "Until"),
        ("until=0001-01-01T00:00", "Until"),
        ("since=9999-12-31T23:59", "From"),
        ("since=2026-01-02T00:00&until=2026-01-01T00:00", "Until"),
        ("kind=<b>bogus</b>", "Kind"),
        ("server=abc", "Server"),
        ("campaign=999999", "Campaign"),
        ("before=-5", "before"),
        ("after=x", "after"),
    ],
)
@pytest.mark.parametrize("url", [LOG, EXPORT])
def test_bad_filter_input_is_a_400_naming_the_field(viewer_client, url, query, named):
    response = viewer_client.get(f"{url}?{query}")
    html = response.content.decode()
    assert response.status_code == 400
    assert "These filters cannot be used" in html
    assert re.search(rf">{named}</a>: |<li>{named}: ", html)
    assert "<b>bogus</b>" not in html


# Filters


def test_each_filter_selects_its_events(viewer_client, make_server, campaign):
    other_server = make_server(name="exchange")
    other_campaign = make_campaign([other_server], 1)
    ses = campaign.servers.get()
    week_ago = timedelta(days=7)
    wanted = {
        "server": make_events(server=ses, server_name="ses")[0],
        "campaign": make_events(campaign=campaign)[0],
        "kind": make_events(kind=Kind.LEARNED_LIMIT)[0],
        "code": make_events(kind=Kind.FAILURE, code=550, text="5.1.1 User unknown")[0],
        "since": make_events(ago=timedelta(seconds=5))[0],
        "until": make_events(ago=week_ago)[0],
        "q": make_events(kind=Kind.DEFERRED, code=454, text="Throttling failure: Maximum sending rate exceeded")[0],
    }
    make_events(5, server=other_server, server_name="exchange", campaign=other_campaign, code=250)
    cut = timezone.localtime() - timedelta(seconds=30)
    queries = {
        "server": f"server={ses.pk}",
        "campaign": f"campaign={campaign.pk}",
        "kind": "kind=learned_limit",
        "code": "code=550",
        "since": f"since={cut:%Y-%m-%dT%H:%M:%S}",
        "until": f"until={timezone.localtime() - week_ago + timedelta(minutes=1):%Y-%m-%dT%H:%M}",
        "q": "q=throttling",
    }

    for name, query in queries.items():
        response = viewer_client.get(f"{LOG}?{query}")
        assert response.status_code == 200
        assert shown_ids(response) == [wanted[name].pk], name


def test_filters_combine(viewer_client, campaign):
    ses = campaign.servers.get()
    make_events(3, server=ses, kind=Kind.ROTATION)
    [wanted] = make_events(server=ses, campaign=campaign, kind=Kind.ROTATION)
    make_events(2, campaign=campaign, kind=Kind.CONNECT)

    response = viewer_client.get(f"{LOG}?server={ses.pk}&campaign={campaign.pk}&kind=rotation")

    assert shown_ids(response) == [wanted.pk]


def test_kind_choices_are_the_pool_kinds_and_auto_pause():
    choices = {value for value, _ in filters.LogFilterForm().fields["kind"].choices}
    assert {"", "connect", "421", "reconnect", "rotation", "learned_limit", "auto_pause"} <= choices


# Keyset pages


def test_pages_go_older_without_overlap_and_stay_put_when_new_events_arrive(viewer_client):
    events = make_events(120)
    newest_first = [event.pk for event in reversed(events)]

    first = viewer_client.get(LOG)
    older_url = first.context["page"].older and f"{LOG}?before={first.context['page'].older}"
    make_events(7, ago=timedelta(seconds=1))  # arrive while the reader is on the first page
    second = viewer_client.get(older_url)
    third = viewer_client.get(f"{LOG}?before={second.context['page'].older}")

    assert shown_ids(first) == newest_first[:50]
    assert shown_ids(second) == newest_first[50:100]
    assert shown_ids(third) == newest_first[100:]
    assert third.context["page"].older is None
    assert f'href="{LOG}?before={first.context["page"].older}"' in first.content.decode()


def test_newer_pages_come_back_the_same_way(viewer_client):
    events = make_events(120)
    newest_first = [event.pk for event in reversed(events)]
    second = viewer_client.get(f"{LOG}?before={newest_first[49]}")

    back = viewer_client.get(f"{LOG}?after={second.context['page'].newer}")

    assert shown_ids(back) == newest_first[:50]
    assert back.context["page"].older == newest_first[49]


def test_pages_keep_their_filters(viewer_client):
    make_events(60, kind=Kind.ROTATION)
    make_events(60, kind=Kind.CONNECT)

    first = viewer_client.get(f"{LOG}?kind=rotation")
    html = first.content.decode()

    assert f"?kind=rotation&amp;before={first.context['page'].older}" in html
    assert f"{EXPORT}?kind=rotation" in html


def test_pages_never_count_the_table_or_skip_with_offset(viewer_client):
    make_events(60)
    with CaptureQueriesContext(connection) as queries:
        viewer_client.get(f"{LOG}?before=30")
        viewer_client.get(LOG)
    sql = " ".join(query["sql"] for query in queries.captured_queries).upper()
    assert "OFFSET" not in sql and "COUNT(" not in sql


# Live tail


def test_the_live_tail_returns_only_the_newer_rows(viewer_client):
    old = make_events(3)
    new = make_events(2, kind=Kind.ROTATION, ago=timedelta(seconds=1))

    response = viewer_client.get(f"{LOG}?after={old[-1].pk}", HTTP_HX_REQUEST="true")
    html = response.content.decode()

    assert response.status_code == 200
    assert shown_ids(response) == [new[1].pk, new[0].pk]
    assert "<html" not in html and "<table" not in html
    # the next poll asks for what is newer than these
    assert f'id="live-after" name="after" value="{new[1].pk}" hx-swap-oob="true"' in html


def test_the_live_tail_keeps_the_filters(viewer_client):
    [start] = make_events()
    make_events(2, kind=Kind.CONNECT)
    [rotation] = make_events(kind=Kind.ROTATION)

    response = viewer_client.get(f"{LOG}?kind=rotation&after={start.pk}", HTTP_HX_REQUEST="true")

    assert shown_ids(response) == [rotation.pk]


def test_nothing_new_for_the_live_tail_is_an_empty_answer(viewer_client):
    [newest] = make_events()
    response = viewer_client.get(f"{LOG}?after={newest.pk}", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content.decode().strip() == ""


def test_the_first_page_polls_for_new_rows_into_the_table_top(viewer_client):
    [newest] = make_events()
    html = viewer_client.get(f"{LOG}?kind=connect").content.decode()
    assert "data-poll-while-checked" in html and 'hx-trigger="every 2s"' in html
    assert f'hx-get="{LOG}?kind=connect"' in html
    assert 'hx-target="#event-rows" hx-swap="afterbegin"' in html
    assert f'id="live-after" name="after" value="{newest.pk}"' in html


def test_older_pages_do_not_poll(viewer_client):
    make_events(60)
    html = viewer_client.get(f"{LOG}?before=30").content.decode()
    assert "every 2s" not in html


# What a row shows


def test_server_text_is_escaped(viewer_client):
    make_events(kind=Kind.FAILURE, code=550, text='<script>alert("x")</script><img src=x onerror=alert(1)>')
    html = viewer_client.get(LOG).content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_long_server_text_is_folded_with_its_start_as_summary(viewer_client):
    text = "5.7.1 " + "<b>blocked</b> " * 60
    make_events(kind=Kind.FAILURE, code=550, text=text)
    html = viewer_client.get(LOG).content.decode()
    folded = re.search(r"<details><summary>(.*?)</summary>(.*?)</details>", html, re.S)
    assert folded
    summary, full = folded.groups()
    assert summary.startswith("5.7.1 &lt;b&gt;blocked&lt;/b&gt;") and len(unescape(summary)) <= 200
    assert full.count("&lt;b&gt;blocked&lt;/b&gt;") == 60
    assert "<b>blocked" not in html


def test_a_storm_row_shows_how_many_times_and_until_when(viewer_client):
    at = timezone.now() - timedelta(minutes=3)
    Event.objects.bulk_create(
        [Event(at=at, last_at=at + timedelta(seconds=42), count=17, kind=Kind.SESSION_CLOSED_421, code=421)]
    )
    html = viewer_client.get(LOG).content.decode()
    assert "×17" in html
    assert f'to <time datetime="{timezone.localtime(at + timedelta(seconds=42)):%Y-%m-%dT%H:%M:%S}' in html


def test_each_event_links_to_its_campaign_and_server(viewer_client, campaign):
    server = campaign.servers.get()
    make_events(server=server, server_name=server.name, campaign=campaign)
    html = viewer_client.get(LOG).content.decode()
    assert f'href="{reverse("campaigns:detail", args=[campaign.pk])}">{campaign.name}</a>' in html
    assert f'href="{reverse("smtp_settings:list")}#server-{server.pk}">{server.name}</a>' in html


# Counts per kind


def test_counts_per_kind_add_up_storm_rows(viewer_client):
    make_events(3, kind=Kind.CONNECT)
    make_events(2, kind=Kind.SESSION_CLOSED_421, count=40)
    make_events(kind=Kind.RECONNECT, count=5)

    response = viewer_client.get(LOG)

    assert response.context["counts"] == [("421", 80), ("reconnect", 5), ("connect", 3)]
    assert f'href="{LOG}?kind=421">421</a></dt><dd>80</dd>' in response.content.decode()


def test_counts_follow_the_filter(viewer_client, campaign):
    make_events(3, kind=Kind.CONNECT, campaign=campaign)
    make_events(4, kind=Kind.CONNECT)
    make_events(kind=Kind.SESSION_CLOSED_421, count=9, campaign=campaign)

    response = viewer_client.get(f"{LOG}?campaign={campaign.pk}")

    assert counts(response) == {"connect": 3, "421": 9}


def test_without_a_start_the_counts_cover_the_last_24_hours_and_say_so(viewer_client):
    make_events(2, kind=Kind.ROTATION, ago=timedelta(days=2))
    make_events(3, kind=Kind.CONNECT)

    response = viewer_client.get(LOG)

    assert counts(response) == {"connect": 3}
    assert len(shown_ids(response)) == 5  # the table shows them all
    said = re.search(r'<div id="log-counts"[^>]*>\s*<p class="help">(.*?)</p>', html(response), re.S)[1]
    help_text = " ".join(said.split())
    start = timezone.localtime(response.context["window"][0])
    assert help_text == (
        f"These counts cover {start:%Y-%m-%d %H:%M} to now. Counting reads every event, so it looks back 24 hours, "
        "or up to a week after the “From” time you set. To count all the events of one campaign, choose that campaign."
    )


def html(response) -> str:
    return unescape(response.content.decode())


def test_kinds_read_as_names_in_the_rows_the_counts_and_the_filter(viewer_client, campaign):
    make_events(2, kind=Kind.IDLE_CLOSE, campaign=campaign)
    make_events(kind=Kind.LEARNED_LIMIT)
    make_events(kind="auto_pause", campaign=campaign)
    make_events(kind=Kind.POOL_WAIT_TIMEOUT)

    page = html(viewer_client.get(LOG))
    panel = html(viewer_client.get(reverse("logs:campaign", args=[campaign.pk])))

    for identifier, name in [
        ("idle_close", "idle close"),
        ("learned_limit", "learned limit"),
        ("auto_pause", "auto-pause"),
        ("pool_wait_timeout", "no free connection"),
    ]:
        assert f'<span class="kind">{name}</span>' in page
        assert f'kind={identifier}">{name}</a></dt>' in page
        assert f'<option value="{identifier}">{name}</option>' in page
    assert 'kind=idle_close">idle close</a></dt><dd>2</dd>' in panel and "auto-pause</a>" in panel
    assert "idle_close<" not in page + panel and "learned_limit<" not in page


def test_the_live_tail_brings_rows_without_counting_and_the_counts_come_on_their_own_poll(viewer_client):
    """Counting reads the whole window: the tail's 2 s poll does not, the counts' 30 s one does."""
    [first] = make_events(kind=Kind.CONNECT)
    make_events(3, kind=Kind.SESSION_CLOSED_421, ago=timedelta(seconds=1))

    with CaptureQueriesContext(connection) as queries:
        tail = viewer_client.get(f"{LOG}?after={first.pk}", HTTP_HX_REQUEST="true").content.decode()
    counts = viewer_client.get(f"{LOG}?kind=", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="log-counts").content.decode()

    assert len(shown_ids_in(tail)) == 3
    assert "log-counts" not in tail and not any("SUM(" in query["sql"].upper() for query in queries)
    assert counts.lstrip().startswith('<div id="log-counts"') and "<tr" not in counts
    assert 'kind=421">421</a></dt><dd>3</dd>' in counts and 'kind=connect">connect</a></dt><dd>1</dd>' in counts


def test_the_counts_poll_every_30_seconds_while_the_live_tail_is_on(viewer_client):
    page = viewer_client.get(f"{LOG}?kind=421").content.decode()
    older = viewer_client.get(f"{LOG}?before=1000").content.decode()

    assert 'name="live" id="live-tail" data-poll-while-checked' in page
    assert (
        f'<div id="log-counts" hx-get="{LOG}?kind=421" hx-trigger="every 30s" hx-swap="outerHTML" '
        'data-poll-while="live-tail">' in page
    )
    assert '<div id="log-counts">' in older  # an older page has no live tail


def test_a_live_tail_with_nothing_new_counts_nothing(viewer_client):
    [last] = make_events(kind=Kind.CONNECT)
    with CaptureQueriesContext(connection) as queries:
        tail = viewer_client.get(f"{LOG}?after={last.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "log-counts" not in tail and not any("SUM(" in query["sql"].upper() for query in queries)


def shown_ids_in(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="event-(\d+)"', html)]


def test_a_chosen_campaign_counts_all_its_events(viewer_client, campaign):
    make_events(2, kind=Kind.ROTATION, ago=timedelta(days=20), campaign=campaign)
    make_events(1, kind=Kind.CONNECT, campaign=campaign)

    response = viewer_client.get(f"{LOG}?campaign={campaign.pk}")

    assert counts(response) == {"rotation": 2, "connect": 1}


def test_a_time_range_is_counted_up_to_a_week(viewer_client):
    make_events(1, kind=Kind.ROTATION, ago=timedelta(days=10))
    make_events(2, kind=Kind.RETRY, ago=timedelta(days=3))
    since = timezone.localtime() - timedelta(days=30)

    response = viewer_client.get(f"{LOG}?since={since:%Y-%m-%dT%H:%M}")

    assert counts(response) == {"retry": 2}
    assert len(shown_ids(response)) == 3


def test_a_text_search_looks_at_the_last_24_hours_without_a_start(viewer_client):
    make_events(kind=Kind.RETRY, text="4.4.2 Timeout waiting for data", ago=timedelta(days=2))
    [recent] = make_events(kind=Kind.RETRY, text="4.4.2 Timeout waiting for data")

    response = viewer_client.get(f"{LOG}?q=timeout")

    assert shown_ids(response) == [recent.pk]


# CSV export


def read_csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_export_streams_the_filtered_events_as_csv(viewer_client, campaign):
    server = campaign.servers.get()
    make_events(2, kind=Kind.CONNECT)
    [storm] = make_events(
        kind=Kind.SESSION_CLOSED_421,
        count=12,
        server=server,
        server_name=server.name,
        campaign=campaign,
        code=421,
        stage="MAIL",
        text=SES_421[4:],
        connection_id=0x104B9DBD << 24 | 10,
        messages_on_connection=50,
    )

    response = viewer_client.get(f"{EXPORT}?kind=421&campaign={campaign.pk}")
    rows = read_csv(response)

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    today = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == (
        f'attachment; filename="relaydeck-events-campaign-{campaign.pk}-421-{today}.csv"'
    )
    assert list(rows[0]) == filters.EXPORT_COLUMNS
    assert (
        rows
        == [
            {
                "at": storm.at.isoformat(),
                "last_at": storm.last_at.isoformat(),
                "count": "12",
                "kind": "421",
                "kind_name": "421",
                "server": "ses",
                "campaign": campaign.name,
                "outbox_message_id": "",
                "connection": "104b9dbd·10",  # as the log shows it, to match the rows by
                "messages_on_connection": "50",
                "stage": "MAIL",
                "code": "421",
                "enhanced_code": "",
                "text": SES_421[4:],
                "duration_ms": "",
                "recipient": "",
                "message_id": "",
            }
        ]
    )
    assert ">104b9dbd·10</span>" in viewer_client.get(f"{LOG}?kind=421").content.decode()


def test_the_export_is_named_for_its_filters_in_safe_characters(viewer_client, make_server):
    server = make_server(name="ses")
    today = timezone.localdate().isoformat()
    cases = [
        ("", f"relaydeck-events-{today}.csv"),
        (f"server={server.pk}&kind=idle_close", f"relaydeck-events-server-{server.pk}-idle_close-{today}.csv"),
        (
            "code=550&since=2026-11-20T10:00&until=2026-11-21T00:00",
            f"relaydeck-events-code-550-from-20261120-1000-until-20261121-0000-{today}.csv",
        ),
        ('q="; filename=evil.exe%0d%0a', f"relaydeck-events-matching-filename-evil-exe-{today}.csv"),
    ]
    for query, name in cases:
        response = viewer_client.get(f"{EXPORT}?{query}")
        assert response["Content-Disposition"] == f'attachment; filename="{name}"', query


def test_export_reads_in_keyset_chunks_newest_first(viewer_client, monkeypatch):
    monkeypatch.setattr(filters, "EXPORT_CHUNK", 4)
    events = make_events(10, kind=Kind.ROTATION)

    response = viewer_client.get(EXPORT)
    chunks = list(response.streaming_content)

    assert len(chunks) == 3  # 4 + 4 + 2 rows, the header with the first
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert [row["at"] for row in rows] == [event.at.isoformat() for event in reversed(events)]


def test_export_defuses_spreadsheet_formulas(viewer_client):
    for text in ('=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "ok = fine"):
        make_events(kind=Kind.FAILURE, text=text, recipient="=cmd|' /C calc'!A0")

    rows = read_csv(viewer_client.get(EXPORT))

    assert [row["text"] for row in rows] == [
        "ok = fine",
        "'\t=1",
        "'@SUM(A1)",
        "'-2+3",
        "'+1+1",
        '\'=HYPERLINK("http://evil")',
    ]
    assert {row["recipient"] for row in rows} == {"'=cmd|' /C calc'!A0"}


# A campaign's events


def test_the_campaign_page_shows_its_event_counts_and_links_into_the_log(viewer_client, campaign):
    make_events(4, kind=Kind.CONNECT, campaign=campaign)
    make_events(kind=Kind.SESSION_CLOSED_421, count=6, campaign=campaign)
    make_events(9, kind=Kind.ROTATION)  # another campaign's, or none

    response = viewer_client.get(reverse("campaigns:detail", args=[campaign.pk]))
    html = response.content.decode()

    assert response.context["event_counts"] == [("421", 6), ("connect", 4)]
    assert f'<a href="{LOG}?campaign={campaign.pk}">See all in the log</a>' in html
    assert f'href="{LOG}?campaign={campaign.pk}&amp;kind=421">421</a></dt><dd>6</dd>' in html
    assert 'id="campaign-events"' in html


def test_the_campaign_events_block_can_be_fetched_alone(viewer_client, campaign):
    make_events(2, kind=Kind.CONNECT, campaign=campaign)
    response = viewer_client.get(reverse("logs:campaign", args=[campaign.pk]), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and 'id="campaign-events"' in html and "<html" not in html


def send_at(campaign, moments) -> None:
    subscribers = list(campaign.lists.get().subscribers.exclude(deliveries__campaign=campaign))
    Delivery.objects.bulk_create(
        [
            Delivery(campaign=campaign, subscriber=subscriber, status="sent", sent_at=moment)
            for subscriber, moment in zip(subscribers, moments, strict=False)
        ]
    )


def chart_of(html: str) -> str:
    return re.search(r"<svg.*?</svg>", html, re.S).group(0)


def bars_of(svg: str) -> list[tuple[str, str]]:
    """(height, tooltip) of each "sent" bar."""
    return re.findall(
        r'<rect class="sent" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"><title>([^<]*)</title>', svg
    )


def test_a_long_run_has_a_bar_per_minute_with_sends_and_marks_for_421s(viewer_client, make_server):
    campaign = make_campaign([make_server()], 6)
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=100)
    send_at(
        campaign,
        [minute, minute + timedelta(seconds=20), minute + timedelta(minutes=2), minute + timedelta(minutes=90)],
    )
    make_events(at=minute + timedelta(minutes=2, seconds=5), kind=Kind.SESSION_CLOSED_421, count=3, campaign=campaign)
    make_events(at=minute + timedelta(minutes=2, seconds=6), kind=Kind.RECONNECT, count=3, campaign=campaign)

    html = viewer_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    svg = chart_of(html)

    assert 'role="img"' in svg
    assert "<title>Messages sent per minute, with 421s, reconnects and rotations</title>" in svg
    assert re.search(r'aria-label="[^"]*4 sent, 3 sessions closed with a 421, 3 reconnects, 0 rotations', svg)
    assert "UTC time; one bar per minute</text>" in svg and ">messages</text>" in svg
    bars = bars_of(svg)
    assert [title.split(": ")[1] for _, title in bars] == ["2 sent", "1 sent", "1 sent"]
    assert float(bars[0][0]) == pytest.approx(2 * float(bars[1][0]))
    assert re.findall(r'<path class="mark-421" d="M[^"]+z"><title>([^<]*)</title>', svg) == [
        f"{timezone.localtime(minute + timedelta(minutes=2)):%H:%M}: 3 × 421"
    ]
    assert len(re.findall(r'<path class="mark-reconnect" d="M[^"]+a6 6[^"]+z"><title>', svg)) == 1


def test_a_21_second_run_has_a_bar_per_second(viewer_client, make_server):
    campaign = make_campaign([make_server()], 6)
    start = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    send_at(campaign, [start, start, start + timedelta(seconds=1), start + timedelta(seconds=20)])

    svg = chart_of(viewer_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode())

    assert "<title>Messages sent per second, with 421s, reconnects and rotations</title>" in svg
    assert "one bar per second</text>" in svg
    bars = bars_of(svg)
    assert [title for _, title in bars] == [
        f"{timezone.localtime(start + timedelta(seconds=s)):%H:%M:%S}: {n} sent" for s, n in ((0, 2), (1, 1), (20, 1))
    ]


def test_marks_carry_what_the_server_said_escaped_and_bounded(viewer_client, make_server):
    campaign = make_campaign([make_server()], 3)
    at = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    send_at(campaign, [at, at + timedelta(seconds=30)])
    said = "421 4.7.0 <script>alert(1)</script> Too many messages " + "x" * 400
    make_events(at=at + timedelta(seconds=10), kind=Kind.SESSION_CLOSED_421, count=4, text=said, campaign=campaign)
    make_events(at=at + timedelta(seconds=10), kind=Kind.ROTATION, count=2, campaign=campaign)

    svg = chart_of(viewer_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode())

    [title] = re.findall(r'<path class="mark-421" d="[^"]+"><title>([^<]*)</title>', svg)
    assert "<script>" not in svg
    assert title.startswith(f"{timezone.localtime(at + timedelta(seconds=10)):%H:%M:%S}: 4 × 421: 421 4.7.0 &lt;script")
    assert len(unescape(title.split(": ", 2)[2])) == 200 and title.endswith("…")
    [rotation] = re.findall(r'<path class="mark-rotation" d="[^"]+"><title>([^<]*)</title>', svg)
    assert rotation.endswith(": 2 × rotation")
    legend = re.search(r'<g class="legend".*?</g>', svg, re.S).group(0)
    for css, label in (
        ("mark-421", "421: session closed"),
        ("mark-reconnect", "reconnect"),
        ("mark-rotation", "rotation at the cap"),
    ):
        assert re.search(rf'<path class="{css}" d="M[^"]+z"/><text [^>]+>{label}</text>', legend)


def test_the_chart_covers_the_last_day_in_at_most_120_bars(make_server):
    campaign = make_campaign([make_server()], 5)
    now = timezone.now()
    send_at(campaign, [now - timedelta(days=3), now - timedelta(hours=20), now - timedelta(hours=2), now])

    timeline = filters.campaign_timeline(campaign)

    assert timeline.seconds == 15 * 60 and len(timeline.buckets) <= 120
    assert timeline.total("sent") == 3  # the one three days ago is outside the last 24 hours
    assert timeline.start > now - timedelta(hours=24, minutes=15)


def test_a_launched_campaigns_chart_starts_at_its_launch_not_at_a_test_message_the_day_before(make_server):
    campaign = make_campaign([make_server()], 5)
    launched = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    tested = launched - timedelta(days=1)
    make_events(at=tested, kind=Kind.CONNECT, campaign=campaign)  # the test message's connection
    make_events(at=tested, kind=Kind.SESSION_CLOSED_421, campaign=campaign)
    Campaign.objects.filter(pk=campaign.pk).update(started_at=launched, status="running")
    campaign.refresh_from_db()
    send_at(campaign, [launched + timedelta(seconds=3), launched + timedelta(seconds=30)])

    timeline = filters.campaign_timeline(campaign)

    assert timeline.seconds == 1 and timeline.start == launched  # 30 s: a bar per second, not 15 minutes
    assert timeline.total("sent") == 2 and timeline.total("closed_421") == 0


def test_the_log_shows_the_chart_when_a_campaign_is_chosen(viewer_client, campaign):
    send_at(campaign, [timezone.now() - timedelta(minutes=3)])
    assert "<svg" not in viewer_client.get(LOG).content.decode()
    assert "<svg" in viewer_client.get(f"{LOG}?campaign={campaign.pk}").content.decode()


def test_a_campaign_that_sent_nothing_has_no_chart(viewer_client, campaign):
    html = viewer_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "<svg" not in html and "No events." in html


def panel_of(client, campaign) -> tuple[list, str]:
    """The Events panel's counts per kind and sent bars, and the SQL it took."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("logs:campaign", args=[campaign.pk]), HTTP_HX_REQUEST="true")
    bars = [title.split(": ")[1] for _, title in bars_of(response.content.decode())]
    return [*response.context["event_counts"], *bars], " ".join(query["sql"] for query in queries)


def test_a_poll_of_an_unchanged_campaign_panel_neither_counts_nor_draws_again(viewer_client, campaign):
    at = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    send_at(campaign, [at, at])
    make_events(3, kind=Kind.SESSION_CLOSED_421, campaign=campaign)

    first, _ = panel_of(viewer_client, campaign)
    again, sql = panel_of(viewer_client, campaign)

    assert first == again == [("421", 3), "2 sent"]
    assert "SUM(" not in sql.upper() and "GROUP BY" not in sql.upper()


def aged(campaign, seconds: float) -> None:
    """The campaign's kept panel as it is `seconds` later."""
    key = panel.panel_key(campaign)
    kept = cache.get(key)
    cache.set(key, dataclasses.replace(kept, at=kept.at - seconds))


def test_the_panel_adds_new_events_at_once_and_redraws_a_cheap_chart_after_two_seconds(viewer_client, campaign):
    at = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    send_at(campaign, [at])
    make_events(2, kind=Kind.SESSION_CLOSED_421, campaign=campaign)
    panel_of(viewer_client, campaign)

    make_events(kind=Kind.SESSION_CLOSED_421, count=5, campaign=campaign)
    make_events(kind=Kind.RECONNECT, campaign=campaign)
    send_at(campaign, [at + timedelta(minutes=1)])
    added, sql = panel_of(viewer_client, campaign)
    assert added == [("421", 7), ("reconnect", 1), "1 sent"]  # the chart is not drawn twice within 2 s
    assert "SUM(" in sql.upper() and '"id" >' in sql  # only the new events were counted

    aged(campaign, 2)  # the demo's 35 s run is polled every 2 s: its chart follows every poll
    assert panel_of(viewer_client, campaign)[0] == [("421", 7), ("reconnect", 1), "1 sent", "1 sent"]


def test_a_costly_chart_is_redrawn_at_most_once_per_twenty_times_what_it_took_and_within_a_minute():
    assert panel.redraw_after(0.004) == 2  # a small campaign: every poll
    assert panel.redraw_after(0.55) == pytest.approx(11)  # 200,000 events: a twentieth of the time drawing
    assert panel.redraw_after(5) == 60


def test_a_chart_kept_for_what_it_cost_is_not_redrawn_before(viewer_client, campaign):
    at = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    send_at(campaign, [at])
    panel_of(viewer_client, campaign)
    key = panel.panel_key(campaign)
    cache.set(key, dataclasses.replace(cache.get(key), cost_s=1.0))  # as a 200,000-event campaign's

    send_at(campaign, [at + timedelta(minutes=1)])
    aged(campaign, 19)
    assert panel_of(viewer_client, campaign)[0] == ["1 sent"]
    aged(campaign, 1)
    assert panel_of(viewer_client, campaign)[0] == ["1 sent", "1 sent"]


def test_the_panel_is_worked_out_afresh_when_the_status_changes_or_old_events_go(viewer_client, campaign):
    at = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    send_at(campaign, [at])
    oldest, *_ = make_events(3, kind=Kind.CONNECT, campaign=campaign)
    panel_of(viewer_client, campaign)

    send_at(campaign, [at + timedelta(minutes=1)])
    Campaign.objects.filter(pk=campaign.pk).update(status="finished")
    assert panel_of(viewer_client, campaign)[0] == [("connect", 3), "1 sent", "1 sent"]

    oldest.delete()  # as retention prunes
    assert panel_of(viewer_client, campaign)[0] == [("connect", 2), "1 sent", "1 sent"]


def test_a_learned_ceiling_and_a_close_say_what_the_pool_made_of_them(viewer_client):
    make_events(kind=Kind.LEARNED_LIMIT, code=421, text="421 4.3.2 Too many", detail={"limit": "max_conns", "value": 4})
    make_events(kind=Kind.CLOSE, connection_id=5, detail={"reason": "broken off"})

    html = viewer_client.get(LOG).content.decode()

    assert '<span class="outcome">learned: at most 4 connections at once (the server refused one more)</span>' in html
    assert '<span class="outcome">closed: broken off</span>' in html and "421 4.3.2 Too many" in html


def test_the_event_tables_headers_do_not_break_inside_a_word(viewer_client):
    assert 'class="list-table event-table"' in viewer_client.get(LOG).content.decode()
    stylesheet = (settings.BASE_DIR / "static/css/relaydeck.css").read_text()
    [rule] = re.findall(r"^\.event-table th \{([^}]*)\}", stylesheet, re.M)
    assert "white-space: nowrap" in rule and "overflow-wrap: normal" in rule  # .list-table's is "anywhere"


# A real campaign


@pytest.mark.django_db(transaction=True)
def test_a_capped_servers_421s_reconnects_and_rotations_show_in_the_log(viewer_client, smtp_sandbox, make_server):
    eventlog.flush()  # what earlier tests left in the buffer, before any campaign id could match it
    sandbox = smtp_sandbox(max_msgs_per_session=50, pipelining=True)
    server = make_server(port=sandbox.port, max_conns=5, max_msgs_per_conn=0)
    campaign = make_campaign([server], 600)

    start_sending(campaign)
    eventlog.flush()

    campaign.refresh_from_db()
    response = viewer_client.get(f"{LOG}?campaign={campaign.pk}")
    html = response.content.decode()
    seen = counts(response)
    assert seen["421"] == sandbox.summary()["replied_421"] > 0
    assert seen["reconnect"] == campaign.reconnects > 0
    assert seen["rotation"] == campaign.rotations > 0
    assert seen["learned_limit"] == 1
    assert seen["connect"] == sandbox.summary()["sessions"]
    assert "Connection closed by server. Maximum message count per session reached." in html
    assert 'class="mark-421"' in html  # and the chart marks them
    by_kind = viewer_client.get(f"{LOG}?campaign={campaign.pk}&kind=421")
    assert {event.kind for event in by_kind.context["page"].events} == {"421"}
    learned = viewer_client.get(f"{LOG}?campaign={campaign.pk}&kind=learned_limit").content.decode()
    assert '<span class="outcome">learned: 45 messages per connection (the server closed after 50)</span>' in learned
