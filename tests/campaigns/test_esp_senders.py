"""Campaigns and the outbox through ESP entries: every subscriber, every message exactly once,
through an ESP's API alone or beside an SMTP server. Asserts on what a real HTTP server on
127.0.0.1 answering as Postmark, and the SMTP sandbox, received."""

import os
import signal
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from django import db
from django.utils import timezone

from campaigns.models import Campaign, Subscriber
from smtp_settings.limit_stores import store
from smtp_settings.models import Bounce, EspMessage, OutboxMessage, OutboxSender, Suppression
from smtp_settings.outbox import delivery
from smtp_settings.outbox.queue import Envelope, enqueue
from smtp_settings.pool import close_all_pools
from tests.campaigns.test_sending import (
    make_campaign,
    received_by_address,
    sent_count,
    start_sending,
    status_of,
    wait_for,
)
from tests.esp_server import (
    POSTMARK_TOKEN,
    Reply,
    content_of,
    esp_entry,
    fake_postmark,
    postmark_entry,
    postmark_routes,
    recipients_of,
)
from tests.smtp_settings.outbox.test_delivery import queue

# Sending threads write from database connections of their own: the test's data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postmark(fake_esp):
    return fake_postmark(fake_esp)


def received_by_esp(api) -> Counter:
    """The recipients of the messages the API took."""
    return Counter(request.json["To"] for request in api.posts() if request.status == 200)


def subscribers_of(campaign: Campaign) -> set[str]:
    return set(Subscriber.objects.filter(lists__campaigns=campaign).values_list("email", flat=True))


def test_a_campaign_through_an_esp_reaches_every_subscriber_once(postmark, make_server):
    entry = postmark_entry(make_server, postmark, max_conns=4)
    campaign = make_campaign([entry], 300)

    start_sending(campaign)

    assert received_by_esp(postmark) == Counter(subscribers_of(campaign))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED
    assert set(campaign.deliveries.values_list("status", "last_code", "server_id")) == {("sent", 200, entry.pk)}
    ids = set(EspMessage.objects.filter(server=entry).values_list("message_id", flat=True))
    assert len(ids) == 300
    assert all(
        delivery.last_reply.removeprefix("sent by Postmark as ") in ids for delivery in campaign.deliveries.all()
    )
    headers = [{h["Name"]: h["Value"] for h in request.json["Headers"]} for request in postmark.posts()]
    assert {h["Message-ID"] for h in headers} == set(campaign.deliveries.values_list("message_id", flat=True))


def test_a_campaign_through_an_esp_and_an_smtp_server_reaches_everyone_once_through_both(
    postmark, smtp_sandbox, make_server, settings
):
    settings.CAMPAIGN_BATCH_SIZE = 20
    sandbox = smtp_sandbox()
    esp_entry = postmark_entry(make_server, postmark, max_conns=2)
    smtp_entry = make_server(port=sandbox.port, max_conns=2)
    campaign = make_campaign([esp_entry, smtp_entry], 400)

    start_sending(campaign)

    through_esp, through_smtp = received_by_esp(postmark), received_by_address(sandbox)
    assert through_esp and through_smtp
    assert through_esp + through_smtp == Counter(subscribers_of(campaign))
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}
    by_server = Counter(campaign.deliveries.values_list("server_id", flat=True))
    assert by_server == {esp_entry.pk: len(through_esp), smtp_entry.pk: len(through_smtp)}


def test_an_esp_throttling_a_campaign_slows_it_for_the_cluster_and_the_deferred_go_later(
    postmark, make_server, settings
):
    settings.CAMPAIGN_RETRY_DELAY_S = 0
    entry = postmark_entry(make_server, postmark, max_conns=1, rate_limit=100)
    postmark.script(*[Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded"})] * 3)
    campaign = make_campaign([entry], 10, auto_pause_after=0)

    start_sending(campaign)

    assert received_by_esp(postmark) == Counter(subscribers_of(campaign))
    assert len(postmark.posts()) == 13
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}
    assert campaign.deliveries.filter(attempts=2).count() == 3  # deferred once, sent in a later pass
    assert store().state(entry.pk).throttled_rate == 50


def test_an_esp_refusing_the_api_key_bounces_nobody(postmark, make_server):
    """A 401 is the ESP refusing our call, not a recipient's address: three campaigns to the
    same subscribers fail, and nobody is bounced or suppressed (three soft bounces would be)."""
    entry = esp_entry(make_server, "postmark", postmark.url, {"server_token": "not-the-token"})

    for _ in range(3):
        campaign = make_campaign([entry], 2, auto_pause_after=0)
        start_sending(campaign)
        assert set(campaign.deliveries.values_list("status", "last_code")) == {("failed", 401)}

    assert [request.status for request in postmark.posts()] == [401] * 6
    assert not Bounce.objects.exists() and not Suppression.objects.exists()
    assert set(Subscriber.objects.values_list("status", flat=True)) == {"active"}


def test_killing_the_worker_mid_campaign_through_an_esp_duplicates_nothing(fake_esp, make_server, workers):
    """SIGKILL mid-run, then a new worker: as over SMTP, the API took every message at most
    once, and the ones it may not have (a fence recorded at the instant of the kill) are
    flagged ambiguous: at most one per session in flight, and one awaiting its record."""
    routes = postmark_routes()
    send = routes["POST", "/email"]
    routes["POST", "/email"] = lambda request: replace(send(request), delay_s=0.002)
    api = fake_esp(routes=routes, key=POSTMARK_TOKEN, key_header="X-Postmark-Server-Token")
    campaign = make_campaign([postmark_entry(make_server, api, max_conns=5)], 1000)
    campaign.launch()
    first = workers()
    wait_for(lambda: sent_count(campaign) >= 200, 60, "200 messages out")

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    close_all_pools()
    stopped_at = len(api.posts())
    workers()
    wait_for(lambda: status_of(campaign) == "finished", 120, "the campaign to finish after the restart")

    assert 200 <= stopped_at < 1000
    counts = received_by_esp(api)
    assert max(counts.values()) == 1, "the API took a message twice"
    everyone = subscribers_of(campaign)
    flagged = set(campaign.deliveries.filter(ambiguous=True).values_list("subscriber__email", flat=True))
    missing = everyone - set(counts)
    assert missing <= flagged and len(missing) <= 5
    assert len(flagged) <= 2 * 5
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}


@pytest.fixture
def _no_lingering(monkeypatch):
    monkeypatch.setattr(delivery, "LINGER_S", 0)


@pytest.mark.usefixtures("_no_lingering")
def test_outbox_messages_through_an_esp_go_once_each_and_record_its_reply(postmark, make_server):
    entry = postmark_entry(make_server, postmark)
    messages = queue(5, route=[entry.pk])

    delivery.deliver()

    assert received_by_esp(postmark) == Counter(f"user{n}@example.test" for n in range(5))
    outcomes = set(OutboxMessage.objects.values_list("status", "last_code", "server_id"))
    assert outcomes == {("sent", 200, entry.pk)}
    assert EspMessage.objects.filter(server=entry).count() == len(messages)


@pytest.mark.usefixtures("_no_lingering")
def test_an_outbox_message_the_esp_refuses_fails_and_one_it_defers_comes_back(postmark, make_server, settings):
    settings.OUTBOX_RETRY_DELAY_S = 60
    entry = postmark_entry(make_server, postmark, max_conns=1)
    postmark.script(
        Reply(422, {"ErrorCode": 300, "Message": "Invalid 'From' address"}),
        Reply(503, {"ErrorCode": 503, "Message": "Down for maintenance"}),
    )
    data = b"From: alerts@example.test\r\nTo: a@example.test\r\nSubject: Hi\r\n\r\nHi\r\n"
    first, second = enqueue([Envelope("alerts@example.test", ["a@example.test"], data, "api", route=[entry.pk])] * 2)

    delivery.deliver()

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.last_code) == ("failed", 422)
    assert "Invalid 'From' address" in first.last_reply
    assert (second.status, second.last_code, second.attempts) == ("deferred", 503, 1)


def test_a_campaign_through_an_entry_of_one_recipient_per_call_is_unchanged(postmark, make_server):
    entry = postmark_entry(make_server, postmark, max_batch=1)
    campaign = make_campaign([entry], 30)

    start_sending(campaign)

    assert received_by_esp(postmark) == Counter(subscribers_of(campaign))
    assert len(postmark.posts()) == 30
    assert set(campaign.deliveries.values_list("status", "attempts")) == {("sent", 1)}


# -- an outbox message to more recipients than one call takes --

BULLETIN = (
    b"From: Ops <ops@example.test>\r\nTo: team0@example.test\r\nSubject: Maintenance tonight\r\n"
    b"Message-ID: <maint@example.test>\r\n\r\nDown from 22:00.\r\n"
)


def bulletin(entry, count: int = 120) -> OutboxMessage:
    recipients = [f"team{n}@example.test" for n in range(count)]
    [message] = enqueue([Envelope("ops@example.test", recipients, BULLETIN, "relay", route=[entry.pk])])
    return message


@pytest.fixture
def _many_recipients(settings):
    settings.RELAY_MAX_RECIPIENTS = 200


@pytest.mark.usefixtures("_no_lingering", "_many_recipients")
def test_an_outbox_message_to_120_goes_as_calls_of_50_50_and_20_with_the_same_content(postmark, make_server):
    entry = postmark_entry(make_server, postmark, max_batch=50)
    message = bulletin(entry)

    delivery.deliver()

    posts = postmark.posts()
    assert [len(recipients_of(request)) for request in posts] == [50, 50, 20]
    assert all(content_of(request) == content_of(posts[0]) for request in posts)
    assert Counter(a for request in posts for a in recipients_of(request)) == Counter(message.recipients)
    message.refresh_from_db()
    assert (message.status, message.last_code, message.attempts) == ("sent", 200, 1)
    rows = EspMessage.objects.filter(server=entry, reference=f"o{message.pk}")
    assert sorted(rows.values_list("recipient", flat=True)) == sorted(message.recipients)
    assert sorted(Counter(rows.values_list("message_id", flat=True)).values()) == [20, 50, 50]


@pytest.mark.usefixtures("_no_lingering", "_many_recipients")
def test_an_outbox_message_whose_second_call_is_throttled_is_deferred_and_no_further_call_is_made(
    postmark, make_server
):
    """The outbox retries later itself (the backend's retries are 0): the first call's fifty
    have the message, the rest are deferred with the ESP's 429, and so is the message, as
    over SMTP when a server takes some recipients and defers others."""
    entry = postmark_entry(make_server, postmark, max_batch=50)
    send = postmark.routes["POST", "/email"]
    answers = iter([send, lambda request: Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded"})])
    postmark.routes["POST", "/email"] = lambda request: next(answers, send)(request)
    message = bulletin(entry)

    delivery.deliver()

    assert [request.status for request in postmark.posts()] == [200, 429]
    message.refresh_from_db()
    assert (message.status, message.last_code, message.attempts) == ("deferred", 429, 1)
    assert "Rate limit exceeded" in message.last_reply
    assert set(EspMessage.objects.values_list("recipient", flat=True)) == set(recipients_of(postmark.posts()[0]))


@pytest.mark.usefixtures("_no_lingering", "_many_recipients")
def test_a_sender_that_loses_its_lease_between_two_calls_makes_no_further_call(postmark, make_server):
    """The fence before each call: the first call goes, the sender's lease runs out while the
    ESP answers it, and the second call is held back: what went stays sent."""
    entry = postmark_entry(make_server, postmark, max_batch=50)
    send = postmark.routes["POST", "/email"]

    def answer_and_expire_the_lease(request):
        OutboxSender.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
        db.connections.close_all()  # this server thread's own
        return send(request)

    postmark.routes["POST", "/email"] = answer_and_expire_the_lease
    message = bulletin(entry)

    delivery.deliver()

    [went] = postmark.posts()
    assert len(recipients_of(went)) == 50
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("deferred", 1)
    assert "may no longer send it" in message.last_reply
    assert set(EspMessage.objects.values_list("recipient", flat=True)) == set(recipients_of(went))
