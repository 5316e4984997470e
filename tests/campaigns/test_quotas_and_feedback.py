"""A campaign under its servers' shared limits: quota windows it waits for (and says so), a
server with quota left that carries on, throttle replies, and settings edited, a server
disabled, while it runs. Asserts on what the sandbox received, and when."""

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.sending import watchdog
from project.roles import Role
from smtp_settings.events import Kind
from smtp_settings.limit_stores import store
from smtp_settings.models import SmtpServer
from smtp_settings.pool import close_all_pools
from smtp_settings.sandbox import busiest_window
from tests.campaigns.test_exactly_once import in_thread
from tests.campaigns.test_sending import (
    _when_received,
    assert_everyone_received_once,
    make_campaign,
    quick_retries,  # noqa: F401 (a fixture)
    start_sending,
    status_of,
    wait_for,
)
from tests.smtp_settings.test_shared_limits import SES_454
from tests.smtp_settings.test_views import _form_data

pytestmark = pytest.mark.django_db(transaction=True)

WINDOW_S = 6  # the "hour", shortened
# A message's quota is taken just before it goes out; the sandbox times its arrival a little
# later, after the final dot is fenced (a database write): a few ms, more when the database is
# busy, and not the same for every message. Arrivals are checked against a window this much shorter.
ARRIVAL_JITTER_S = 0.2


@pytest.fixture
def short_hour(settings) -> dict:
    """An hourly quota window of WINDOW_S seconds, here and in the workers (their env)."""
    settings.SMTP_QUOTA_HOUR_S = WINDOW_S
    return {"SMTP_QUOTA_HOUR_S": str(WINDOW_S)}


def most_in_any_window(sandbox, span_s: float) -> int:
    """The most messages the sandbox received within any `span_s` seconds."""
    return busiest_window(sorted(message.received_at for message in sandbox.received), span_s)


def waiting(campaign: Campaign) -> tuple[str, object]:
    return Campaign.objects.values_list("waiting_reason", "waiting_until").get(pk=campaign.pk)


def test_a_campaign_bigger_than_the_hourly_quota_sends_a_quota_per_window_and_shows_the_wait(
    smtp_sandbox, make_server, short_hour, viewer_client
):
    sandbox = smtp_sandbox(pipelining=True)
    server = make_server(name="SES", port=sandbox.port, max_conns=5, quota_per_hour=1000)
    campaign = make_campaign([server], 2500)

    sender = in_thread(lambda: start_sending(campaign))
    wait_for(lambda: waiting(campaign)[0], 30, "the campaign to wait for the quota")

    reason, until = waiting(campaign)
    assert reason == "waiting for SES's hourly quota: 1,000 of 1,000 messages used"
    assert timezone.now() < until <= timezone.now() + timedelta(seconds=WINDOW_S + 1)
    assert len(sandbox.received) == 1000
    page = viewer_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "Waiting for SES&#x27;s hourly quota: 1,000 of 1,000 messages used; resumes" in page

    sender.join(timeout=60)
    assert status_of(campaign) == "finished"
    first = min(message.received_at for message in sandbox.received)
    assert sum(message.received_at < first + WINDOW_S for message in sandbox.received) == 1000
    assert most_in_any_window(sandbox, WINDOW_S - ARRIVAL_JITTER_S) <= 1000
    assert_everyone_received_once(sandbox, campaign)
    assert set(campaign.deliveries.values_list("status", "attempts")) == {("sent", 1)}
    assert waiting(campaign) == ("", None)


def test_the_quota_count_survives_a_worker_restart(smtp_sandbox, make_server, short_hour, workers):
    """A worker fills the window and is killed while the campaign waits; the next one, started
    by the watchdog when the window has room, sends only what the window allows."""
    sandbox = smtp_sandbox(pipelining=True)
    server = make_server(name="SES", port=sandbox.port, max_conns=5, quota_per_hour=600)
    campaign = make_campaign([server], 1500)
    campaign.launch()
    first = workers(**short_hour)
    wait_for(lambda: waiting(campaign)[0], 30, "the campaign to wait for the quota")

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    close_all_pools()
    assert len(sandbox.received) == 600
    workers(**short_hour)
    # (a sender task still queued may start at once, and clear the wait when it sends again)
    wait_for(lambda: (until := waiting(campaign)[1]) is None or timezone.now() > until, WINDOW_S + 1, "room")
    watchdog.watchdog()  # its run every minute, a little early
    wait_for(lambda: status_of(campaign) == "finished", 40, "the campaign to finish after the restart")

    assert most_in_any_window(sandbox, WINDOW_S - ARRIVAL_JITTER_S) <= 600
    assert_everyone_received_once(sandbox, campaign)


def test_another_server_with_quota_left_carries_the_rest_without_waiting(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 20
    tiny, roomy = smtp_sandbox(), smtp_sandbox()
    campaign = make_campaign(
        [
            make_server(name="tiny", port=tiny.port, quota_per_day=30),
            make_server(name="roomy", port=roomy.port, quota_per_day=10_000),
        ],
        400,
    )

    sender = in_thread(lambda: start_sending(campaign))
    reasons = set()
    while sender.is_alive():
        reasons.add(waiting(campaign)[0])
        time.sleep(0.01)

    assert len(tiny.received) == 30 and len(roomy.received) == 370
    assert reasons == {""}
    campaign.refresh_from_db()
    assert (campaign.status, campaign.waiting_reason) == ("finished", "")
    assert set(campaign.deliveries.values_list("status", "attempts")) == {("sent", 1)}


def test_throttle_replies_mid_campaign_lower_the_rate_and_the_messages_go_in_a_later_pass(
    smtp_sandbox,
    make_server,
    pool_events,
    quick_retries,  # noqa: F811
):
    throttled_at = []

    def throttle_10th_and_11th(stage, sandbox):
        if stage == "RCPT" and len(sandbox.received) in (9, 10) and len(throttled_at) < 2:
            throttled_at.append(len(sandbox.received))
            return SES_454
        return None

    sandbox = smtp_sandbox(fault=throttle_10th_and_11th)
    server = make_server(name="SES", port=sandbox.port, max_conns=1, rate_limit=50, retries=3)
    campaign = make_campaign([server], 60)

    start_sending(campaign)

    assert_everyone_received_once(sandbox, campaign)
    throttled = [event for event in pool_events if event.kind == Kind.THROTTLED]
    assert [(e.text, e.detail, e.context["campaign_id"]) for e in throttled] == [
        ("Throttling failure: Maximum sending rate exceeded", {"rate": 25.0}, campaign.pk)
    ]
    assert store().state(server.pk).throttled_rate == 25.0
    assert campaign.deliveries.filter(attempts=2).count() == 2
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}


def _sample_sessions(sandbox, samples: list, until: threading.Event) -> threading.Thread:
    """Record (time.monotonic(), the sandbox's open sessions) every 20 ms until `until` is set."""

    def sample():
        while not until.is_set():
            samples.append((time.monotonic(), sandbox.active))
            time.sleep(0.02)

    thread = threading.Thread(target=sample)
    thread.start()
    return thread


def _edit_in_the_browser(browser, server: SmtpServer, **changes) -> None:
    """What an admin's browser posts when they change these fields on the server's form."""
    current = {
        "name": server.name,
        "host": server.host,
        "port": str(server.port),
        "tls": server.tls,
        "auth_protocol": server.auth_protocol,
        "username": "",
        "password": "",
        "max_conns": str(server.max_conns),
        "max_msgs_per_conn": str(server.max_msgs_per_conn),
        "rate_limit": str(server.rate_limit),
        "quota_per_day": "0",
    }
    response = browser.post(reverse("smtp_settings:edit", args=[server.pk]), _form_data(**current | changes))
    assert response.status_code == 302, response.content.decode()


def test_lowering_max_conns_in_the_browser_mid_campaign_closes_the_surplus_within_seconds(
    smtp_sandbox, make_server, login_as
):
    sandbox = smtp_sandbox(latency_ms=2)
    server = make_server(port=sandbox.port, max_conns=6, max_msgs_per_conn=0)
    campaign = make_campaign([server], 1500)
    admin = login_as(Role.ADMIN)
    edited_at = []

    def lower():
        _edit_in_the_browser(admin, server, max_conns="2")
        edited_at.append(time.monotonic())

    sandbox.fault = _when_received(300, lower)
    samples, done = [], threading.Event()
    sampler = _sample_sessions(sandbox, samples, done)

    start_sending(campaign)
    done.set()
    sampler.join()

    assert max(active for at, active in samples if at < edited_at[0]) == 6
    assert max(active for at, active in samples if at > edited_at[0] + 3) <= 2
    assert_everyone_received_once(sandbox, campaign)


def test_lowering_the_rate_mid_campaign_slows_it_within_seconds(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conns=4, rate_limit=100)
    campaign = make_campaign([server], 300)
    lowered_at = []

    def lower():
        SmtpServer.objects.filter(pk=server.pk).update(rate_limit=40)
        lowered_at.append(time.monotonic())

    sandbox.fault = _when_received(50, lower)

    start_sending(campaign)

    later = sorted(message.received_at for message in sandbox.received if message.received_at > lowered_at[0] + 1.5)
    assert len(later) >= 10
    assert later[-1] - later[0] >= (len(later) - 1) / 40 * 0.9  # 40 a second, not 100
    assert_everyone_received_once(sandbox, campaign)


def test_a_server_disabled_mid_campaign_stops_within_a_second_and_its_batch_goes_back_untried(
    smtp_sandbox, make_server, settings
):
    settings.CAMPAIGN_BATCH_SIZE = 2000  # one batch: only the backend can stop it
    sandbox = smtp_sandbox(latency_ms=2)
    server = make_server(name="Relay", port=sandbox.port, max_conns=2)
    campaign = make_campaign([server], 2000)
    disabled_at = []

    def disable():
        SmtpServer.objects.filter(pk=server.pk).update(enabled=False)
        disabled_at.append(time.monotonic())

    sandbox.fault = _when_received(20, disable)

    start_sending(campaign)  # does not raise

    assert max(message.received_at for message in sandbox.received) < disabled_at[0] + 1.5
    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == ("paused", "None of the campaign's SMTP servers is enabled.")
    assert_sent_are_exactly_the_received(campaign, sandbox)
    unsent = campaign.deliveries.exclude(status="sent")
    assert set(unsent.values_list("status", "attempts", "claim_token")) == {("pending", 0, None)}


def assert_sent_are_exactly_the_received(campaign: Campaign, sandbox) -> None:
    sent = set(campaign.deliveries.filter(status="sent").values_list("subscriber__email", flat=True))
    received = [rcpt for message in sandbox.received for rcpt in message.rcpt_tos]
    assert sorted(received) == sorted(sent)
