"""The live figures on a server card: what the cluster-wide store holds, against the
server's limits, in a partial htmx refreshes every 2 s."""

import re
import time

import pytest
from django.urls import reverse

from smtp_settings.limit_stores import State, store
from smtp_settings.shared_limits import effective_ceiling, rate_per_minute, windows_of


def _text(response) -> str:
    assert response.status_code == 200
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def _live(browser, server) -> str:
    return _text(browser.get(reverse("smtp_settings:live", args=[server.pk])))


@pytest.fixture
def forgotten():
    """Servers whose figures the store forgets after the test (Redis outlives the test database)."""
    servers = []
    yield servers.append
    for server in servers:
        store().forget(server.pk)


@pytest.mark.django_db(transaction=True)
def test_the_card_shows_what_every_process_holds_and_sent(viewer_client, make_server, forgotten):
    server = make_server(
        max_conns=6, rate_limit=14, rate_counts="recipients", quota_per_hour=1_500, quota_per_day=50_000
    )
    forgotten(server)
    limits, now = store(), time.time()
    for owner in ("web:101", "worker:202", "worker:202"):
        assert limits.take_slot(server.pk, owner, 6, now + 30, now) is not None
    limits.count_sent(server.pk, 40, now)
    limits.count_sent(server.pk, 2, now)
    assert limits.take_quota(server.pk, 1_234, windows_of(server), now) is None

    text = _live(viewer_client, server)

    assert "Open now 3 of 6 connections" in text
    assert "Last minute 42 of 840 recipients" in text  # 14 a second
    assert "Hour 1,234 of 1,500 messages" in text
    assert "Day 1,234 of 50,000 messages" in text
    assert "Processes 2" in text
    assert "throttled" not in text


@pytest.mark.django_db(transaction=True)
def test_a_lowered_ceiling_and_a_throttled_rate_show(viewer_client, make_server, forgotten):
    server = make_server(max_conns=10, rate_per_minute=30)
    forgotten(server)
    server.record_learned("max_conns", 8)
    limits, now = store(), time.time()
    limits.set_ceiling(server.pk, 4)
    assert limits.set_throttle(server.pk, 0.25, unchanged_since=now, now=now)
    limits.take_slot(server.pk, "worker:7", 4, now + 30, now)

    text = _live(viewer_client, server)

    assert "Open now 1 of 4 connections (lowered from 10)" in text
    assert "Last minute 0 of 30 messages; throttled to 15 a minute after the server's throttle replies" in text


@pytest.mark.django_db(transaction=True)
def test_without_rates_or_quotas_the_card_says_unlimited_and_shows_no_quota(viewer_client, make_server, forgotten):
    server = make_server(max_conns=2)
    forgotten(server)

    text = _live(viewer_client, server)

    assert "Open now 0 of 2 connections" in text
    assert "Last minute 0 messages, rate unlimited" in text
    assert "Hour" not in text and "Day" not in text


def test_the_list_polls_one_partial_per_card(viewer_client, make_server):
    first, second = make_server(), make_server()
    content = viewer_client.get(reverse("smtp_settings:list")).content.decode()
    for server in (first, second):
        url = reverse("smtp_settings:live", args=[server.pk])
        assert f'id="server-live-{server.pk}"' in content
        assert f'hx-get="{url}" hx-trigger="every 2s" hx-swap="outerHTML"' in content

    partial = viewer_client.get(reverse("smtp_settings:live", args=[first.pk])).content.decode()
    assert partial.lstrip().startswith(f'<dl class="limits live" id="server-live-{first.pk}"')
    assert "<html" not in partial


def test_a_deleted_server_is_404_and_a_visitor_must_log_in(viewer_client, client, make_server):
    server = make_server()
    url = reverse("smtp_settings:live", args=[server.pk])
    response = client.get(url)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    server.delete()
    assert viewer_client.get(url).status_code == 404
    assert viewer_client.post(url).status_code == 405


@pytest.mark.parametrize(
    "configured, learned, lowered, ceiling",
    [(10, None, None, 10), (10, 8, None, 8), (10, 8, 4, 4), (10, None, 12, 10), (3, 8, None, 3)],
)
def test_the_ceiling_is_the_lowest_of_configured_learned_and_lowered(
    make_server, configured, learned, lowered, ceiling
):
    server = make_server(max_conns=configured)
    server.learned_max_conns = learned
    assert effective_ceiling(server, State(ceiling=lowered)) == ceiling


@pytest.mark.parametrize(
    "per_second, per_minute, expected", [(0, 0, None), (14, 0, 840), (0, 30, 30), (0.25, 30, 15), (1, 90, 60)]
)
def test_the_rate_a_minute_is_the_stricter_of_the_two(make_server, per_second, per_minute, expected):
    assert rate_per_minute(make_server(rate_limit=per_second, rate_per_minute=per_minute)) == expected


@pytest.mark.django_db(transaction=True)
def test_one_of_a_kind_is_said_in_the_singular(viewer_client, make_server, forgotten):
    """Not "1 messages": the unit agrees with the number it follows."""
    server = make_server(max_conns=1, quota_per_hour=1, rate_counts="recipients")
    forgotten(server)
    limits, now = store(), time.time()
    limits.take_slot(server.pk, "worker:7", 1, now + 30, now)
    limits.count_sent(server.pk, 1, now)

    text = _live(viewer_client, server)

    assert "Open now 1 of 1 connection " in text
    assert "Last minute 1 recipient, rate unlimited" in text
    assert "Hour 0 of 1 message " in text
