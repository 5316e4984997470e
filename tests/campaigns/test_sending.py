"""Sending a campaign: every subscriber exactly once, through the servers' limits, whatever
happens to the worker. Asserts on what a real SMTP server (the sandbox) received."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Event, MailingList, Sender, Subscriber
from campaigns.sending import loop, watchdog
from smtp_settings.bounces.record import suppress
from smtp_settings.deletion import ServerInUse
from smtp_settings.models import SmtpServer, Suppression
from smtp_settings.pool import close_all_pools

# Sending writes from the backend's threads, each with its own database connection: the
# test's data must be committed for them to see it.
pytestmark = pytest.mark.django_db(transaction=True)


def make_campaign(servers, subscribers: int, **fields) -> Campaign:
    mailing_list = MailingList.objects.create(name=f"list {MailingList.objects.count() + 1}")
    Subscriber.objects.bulk_create(
        [Subscriber(email=f"reader{n}@example.test", name=f"Reader {n}") for n in range(subscribers)],
        ignore_conflicts=True,
    )
    members = Subscriber.objects.filter(email__in=[f"reader{n}@example.test" for n in range(subscribers)])
    mailing_list.subscribers.add(*members)
    campaign = Campaign.objects.create(
        name="News",
        subject="Hello {{ subscriber.name }}",
        from_email="News <news@example.test>",
        html_body="<p>Hello {{ subscriber.name }}</p>",
        **fields,
    )
    campaign.lists.add(mailing_list)
    campaign.servers.add(*servers)
    return campaign


def received_by_address(sandbox) -> Counter:
    return Counter(rcpt for message in sandbox.received for rcpt in message.rcpt_tos)


def assert_everyone_received_once(sandbox, campaign: Campaign) -> None:
    expected = set(
        Subscriber.objects.filter(lists__campaigns=campaign, status="active").values_list("email", flat=True)
    )
    counts = received_by_address(sandbox)
    missing = expected - set(counts)
    assert not missing, list(
        Delivery.objects.filter(campaign=campaign, subscriber__email__in=missing).values(
            "status", "ambiguous", "attempts", "last_code", "last_reply", "final_dot_at", "claimed_at", "sent_at"
        )
    )
    assert set(counts) == expected
    duplicates = {address: n for address, n in counts.items() if n > 1}
    assert not duplicates
    assert len({message.message_id for message in sandbox.received}) == len(expected)


def start_sending(campaign: Campaign) -> None:
    """What a worker does with the task that launch() enqueues."""
    assert Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING) == 1
    loop.send_campaign(campaign.pk)


@pytest.fixture
def quick_retries(settings):
    settings.CAMPAIGN_RETRY_DELAY_S = 0


def test_every_subscriber_gets_the_campaign_once_through_a_capped_server(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(max_msgs_per_session=50, pipelining=True)
    server = make_server(port=sandbox.port, max_conns=5, max_msgs_per_conn=0)
    campaign = make_campaign([server], 2000)

    start_sending(campaign)

    assert_everyone_received_once(sandbox, campaign)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}
    assert campaign.sessions_closed_421 == sandbox.summary()["replied_421"] > 0
    assert campaign.rotations > 0  # once the cap was learned
    server.refresh_from_db()
    assert server.learned_msgs_per_conn == 45


def test_each_message_is_personal_and_carries_a_one_click_unsubscribe(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port)], 3)

    start_sending(campaign)

    assert len(sandbox.received) == 3
    for received in sandbox.received:
        message = message_from_bytes(received.data, policy=policy.default)
        delivery = Delivery.objects.get(campaign=campaign, subscriber__email=received.rcpt_tos[0])
        assert message["Subject"] == f"Hello {delivery.subscriber.name}"
        assert message["Message-ID"] == delivery.message_id
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Unsubscribe"].strip().startswith(f"<{settings.SITE_URL}/u/")


def test_rejected_recipients_fail_and_temporary_failures_are_retried_in_a_later_pass(
    smtp_sandbox, make_server, quick_retries
):
    sandbox = smtp_sandbox(reject=r"reader1\d@", tempfail_rate=0.3, seed=7)
    server = make_server(port=sandbox.port, retries=5)
    campaign = make_campaign([server], 40, auto_pause_after=0)

    start_sending(campaign)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED
    failed = campaign.deliveries.filter(status="failed")
    assert set(failed.values_list("subscriber__email", flat=True)) == {f"reader{n}@example.test" for n in range(10, 20)}
    assert {d.last_code for d in failed} == {550}
    retried = campaign.deliveries.filter(status="sent", attempts__gt=1)
    assert retried.exists()  # 451s came back in a later pass and went through
    counts = received_by_address(sandbox)
    assert all(n == 1 for n in counts.values()) and len(counts) == 30


def test_deferred_deliveries_fail_once_the_servers_retries_are_used_up(smtp_sandbox, make_server, quick_retries):
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    server = make_server(port=sandbox.port, retries=2)
    campaign = make_campaign([server], 3, auto_pause_after=0)

    start_sending(campaign)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED
    assert list(campaign.deliveries.values_list("status", "attempts", "last_code").distinct()) == [("failed", 3, 451)]


def test_auto_pauses_after_consecutive_failures_and_says_why(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 5
    sandbox = smtp_sandbox(reject=".")
    campaign = make_campaign([make_server(port=sandbox.port)], 30, auto_pause_after=10)

    start_sending(campaign)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert "10 failed deliveries in a row" in campaign.pause_reason and "550" in campaign.pause_reason
    assert campaign.deliveries.filter(status="failed").count() == 10
    assert campaign.deliveries.filter(status="pending").count() == 20


def test_fails_over_to_another_server_when_one_is_down(smtp_sandbox, make_server, closed_port):
    sandbox = smtp_sandbox()
    down = make_server(name="down", port=closed_port, max_conns=10)
    up = make_server(name="up", port=sandbox.port, max_conns=2)
    campaign = make_campaign([down, up], 500)

    start_sending(campaign)

    assert_everyone_received_once(sandbox, campaign)
    assert set(campaign.deliveries.values_list("server__name", flat=True)) == {"up"}


def test_several_servers_share_the_sending_by_capacity(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 10
    big, small = smtp_sandbox(), smtp_sandbox()
    campaign = make_campaign(
        [make_server(name="big", port=big.port, max_conns=3), make_server(name="small", port=small.port, max_conns=1)],
        400,
    )

    start_sending(campaign)

    assert (len(big.received), len(small.received)) == (300, 100)


def _when_received(count: int, change):
    """A sandbox fault that runs `change()` (a database write) once `count` messages are in."""
    done = []

    def in_a_thread():  # the sandbox's own thread runs an event loop, where Django does no queries
        change()
        connection.close()

    def fault(stage, sandbox):
        if stage == "dot" and len(sandbox.received) >= count and not done:
            done.append(threading.Thread(target=in_a_thread))
            done[0].start()
            done[0].join()

    return fault


def test_a_server_disabled_mid_campaign_sends_nothing_after_the_message_in_flight(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 10
    first, second = smtp_sandbox(), smtp_sandbox()
    disabled = make_server(name="first", port=first.port, max_conns=1)
    campaign = make_campaign([disabled, make_server(name="second", port=second.port, max_conns=1)], 60)
    first.fault = _when_received(5, lambda: SmtpServer.objects.filter(pk=disabled.pk).update(enabled=False))

    start_sending(campaign)

    assert len(first.received) == 5  # disabled while the 5th was answered: nothing after it
    counts = received_by_address(first) + received_by_address(second)
    assert len(counts) == 60 and set(counts.values()) == {1}
    assert status_of(campaign) == "finished"


def test_a_campaign_whose_only_server_is_disabled_mid_run_pauses_with_nothing_in_flight(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conns=1)
    campaign = make_campaign([server], 300)
    sandbox.fault = _when_received(5, lambda: SmtpServer.objects.filter(pk=server.pk).update(enabled=False))

    start_sending(campaign)

    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == ("paused", "None of the campaign's SMTP servers is enabled.")
    assert len(sandbox.received) < 300 and set(received_by_address(sandbox).values()) == {1}
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent", "pending"}


def test_the_only_server_of_a_running_campaign_cannot_be_deleted_and_the_campaign_goes_on(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conns=1)
    campaign = make_campaign([server], 300)
    refused = []

    def delete_the_server():
        try:
            SmtpServer.objects.filter(pk=server.pk).delete()
        except ServerInUse as error:
            refused.append(str(error))

    sandbox.fault = _when_received(5, delete_the_server)

    start_sending(campaign)

    assert len(refused) == 1 and SmtpServer.objects.filter(pk=server.pk).exists()
    assert status_of(campaign) == "finished"
    assert len(sandbox.received) == 300 and set(received_by_address(sandbox).values()) == {1}


def test_each_delivery_is_sent_at_its_own_moment_not_its_batchs(smtp_sandbox, make_server, settings):
    """The charts count messages per second from `sent_at`: one batch sent at 20 msg/s spreads
    over a second, as the server saw it, instead of piling up at the batch's start."""
    settings.CAMPAIGN_BATCH_SIZE = 100
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=1)], 20, rate_limit=20)

    start_sending(campaign)

    sent_at = sorted(campaign.deliveries.values_list("sent_at", flat=True))
    assert len(sent_at) == 20 and len(sandbox.received) == 20
    assert (sent_at[-1] - sent_at[0]).total_seconds() >= 0.8  # 19 gaps of 1/20 s


def test_subscribers_who_left_before_their_turn_are_skipped(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port)], 5)
    loop.populate(campaign)
    Subscriber.objects.filter(email="reader3@example.test").update(status="unsubscribed")

    start_sending(campaign)

    assert "reader3@example.test" not in received_by_address(sandbox)
    assert campaign.deliveries.get(subscriber__email="reader3@example.test").status == "skipped"


def test_suppressed_addresses_are_skipped_and_everyone_else_gets_the_campaign_once(
    smtp_sandbox, make_server, viewer_client
):
    sandbox = smtp_sandbox(pipelining=True)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=3)], 30)
    suppress("READER3@example.test", Suppression.Reason.HARD_BOUNCE)  # before sending starts
    loop.populate(campaign)
    suppress("reader17@example.test", Suppression.Reason.COMPLAINT)  # after its delivery was made
    suppress("stranger@example.test", Suppression.Reason.MANUAL)

    start_sending(campaign)

    skipped = {"reader3@example.test", "reader17@example.test"}
    counts = received_by_address(sandbox)
    assert set(counts) == {f"reader{n}@example.test" for n in range(30)} - skipped
    assert set(counts.values()) == {1} and len(sandbox.received) == 28
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED
    for delivery in campaign.deliveries.filter(subscriber__email__in=skipped):
        assert (delivery.status, delivery.attempts, delivery.final_dot_at) == ("skipped", 0, None)
        assert delivery.last_reply == "the address is on the suppression list"
    assert campaign.deliveries.filter(status="sent").count() == 28
    progress = viewer_client.get(reverse("campaigns:progress", args=[campaign.pk])).content.decode()
    assert '<dt>Skipped</dt><dd class="count-skipped">2</dd>' in progress
    assert "30 of 30 done" in progress


def test_campaign_rate_limit_holds(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=4)], 21, rate_limit=20)

    started = time.monotonic()
    start_sending(campaign)

    assert time.monotonic() - started >= 1.0  # 21 messages at 20/s: the last one a second after the first
    assert len(sandbox.received) == 21


def test_a_sender_that_died_is_replaced_without_loss_or_duplicates(smtp_sandbox, make_server):
    """Rows a dead sender left in `sending`: those before their final dot are sent again,
    those past it are counted sent and flagged ambiguous (the default policy)."""
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port)], 6)
    loop.populate(campaign)
    deliveries = list(campaign.deliveries.order_by("id"))
    now = timezone.now()
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries[:2]]).update(status="sending", claimed_at=now)
    Delivery.objects.filter(pk=deliveries[2].pk).update(status="sending", claimed_at=now, final_dot_at=now)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = Sender.objects.create(
        campaign=campaign, owner=f"{socket.gethostname()}:{dead.pid}", lease_until=now + timedelta(hours=1)
    )
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries[:3]]).update(claim_token=gone.pk)

    start_sending(campaign)

    assert sorted(received_by_address(sandbox)) == sorted(
        d.subscriber.email for d in deliveries if d.pk != deliveries[2].pk
    )
    ambiguous = Delivery.objects.get(pk=deliveries[2].pk)
    assert (ambiguous.status, ambiguous.ambiguous) == ("sent", True)
    logged = Event.objects.get(kind="ambiguous", campaign=campaign)
    assert logged.detail == {"deliveries": 1, "policy": "sent"} and "counted as sent" in logged.text


def test_a_campaign_with_all_the_senders_its_servers_can_use_takes_no_more(make_server):
    campaign = make_campaign([make_server(max_conns=1)], 1)  # one connection: one sender
    Campaign.objects.filter(pk=campaign.pk).update(status="running")
    Sender.objects.create(
        campaign=campaign,
        owner=f"{socket.gethostname()}:{os.getppid()}",
        lease_until=timezone.now() + timedelta(minutes=1),
    )

    loop.send_campaign(campaign.pk)

    assert campaign.deliveries.count() == 0  # it did not even start


def test_cancel_marks_what_is_left_cancelled_and_retry_failed_requeues(smtp_sandbox, make_server):
    # A policy refusal: a failure worth another try, not a bounce (which would suppress the address).
    sandbox = smtp_sandbox(reject="reader0@", reject_reply="550 5.7.1 <{address}>: Message rejected by policy")
    campaign = make_campaign([make_server(port=sandbox.port)], 3)
    start_sending(campaign)
    campaign.refresh_from_db()
    assert campaign.status == "finished" and campaign.deliveries.filter(status="failed").count() == 1

    sandbox.reject = None
    assert campaign.retry_failed() == 1
    assert campaign.status == "running"
    loop.send_campaign(campaign.pk)
    assert received_by_address(sandbox)["reader0@example.test"] == 1

    other = make_campaign([make_server(name="other", port=sandbox.port)], 4)
    loop.populate(other)
    assert other.cancel()
    assert set(other.deliveries.values_list("status", flat=True)) == {"cancelled"}
    assert not other.launch()


# -- with real django-q2 workers --


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def sent_count(campaign: Campaign) -> int:
    return campaign.deliveries.filter(status="sent").count()


def status_of(campaign: Campaign) -> str:
    return Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk)


def test_a_worker_sends_the_launched_campaign_to_everyone_once(smtp_sandbox, make_server, workers):
    sandbox = smtp_sandbox(max_msgs_per_session=50, pipelining=True)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=5)], 2000)

    started = time.monotonic()
    assert campaign.launch()
    assert time.monotonic() - started < 1
    workers()
    wait_for(lambda: status_of(campaign) == "finished", 120, "the campaign to finish")

    assert_everyone_received_once(sandbox, campaign)


def test_killing_the_worker_mid_campaign_duplicates_nothing_and_flags_what_it_cannot_know(
    smtp_sandbox, make_server, workers
):
    """SIGKILL mid-run, then a new worker: every message the server got, it got once, and all
    others went out after the restart, except a message whose final dot was being recorded
    at the instant of the kill (a database round trip: the record may commit after its
    writer is dead). At most one per connection, and flagged ambiguous."""
    sandbox = smtp_sandbox(max_msgs_per_session=50, latency_ms=1)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=5)], 1500)
    campaign.launch()
    first = workers()
    wait_for(lambda: sent_count(campaign) >= 300, 60, "300 messages out")

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    close_all_pools()
    stopped_at = len(sandbox.received)
    workers()
    wait_for(lambda: status_of(campaign) == "finished", 120, "the campaign to finish after the restart")

    assert 300 <= stopped_at < 1500
    counts = received_by_address(sandbox)
    assert max(counts.values()) == 1, "a message was received twice"
    everyone = set(campaign.deliveries.values_list("subscriber__email", flat=True))
    flagged = set(campaign.deliveries.filter(ambiguous=True).values_list("subscriber__email", flat=True))
    missing = everyone - set(counts)
    assert missing <= flagged and len(missing) <= 5
    assert len(flagged) <= 2 * 5  # per connection: the message in flight, and one awaiting its record
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}


def test_pause_stops_within_a_batch_and_resume_sends_only_the_rest(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 50
    sandbox = smtp_sandbox(latency_ms=1)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=2)], 600)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    sender = threading.Thread(target=lambda: (loop.send_campaign(campaign.pk), connection.close()))
    sender.start()
    wait_for(lambda: sent_count(campaign) >= 100, 60, "100 messages out")

    assert campaign.pause("by the test")
    sender.join(timeout=30)
    paused_at = len(sandbox.received)
    time.sleep(0.5)

    assert len(sandbox.received) == paused_at < 600
    assert paused_at - 100 <= 2 * 50  # the batch in hand, at most, went out after the pause
    assert not campaign.deliveries.filter(status="sending").exists()
    campaign.resume()
    loop.send_campaign(campaign.pk)
    assert_everyone_received_once(sandbox, campaign)


def test_the_watchdog_launches_campaigns_whose_time_has_come(make_server):
    due = make_campaign([make_server()], 1, scheduled_at=timezone.now() - timedelta(seconds=1))
    later = make_campaign([make_server(name="later")], 1, scheduled_at=timezone.now() + timedelta(hours=1))
    Campaign.objects.filter(pk__in=[due.pk, later.pk]).update(status=Campaign.Status.SCHEDULED)

    watchdog.watchdog()

    assert status_of(due) == "running" and status_of(later) == "scheduled"


def test_a_campaign_whose_servers_are_all_disabled_pauses_and_says_why(make_server):
    campaign = make_campaign([make_server(enabled=False)], 2)

    start_sending(campaign)

    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == ("paused", "None of the campaign's SMTP servers is enabled.")
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"pending"}


def test_a_batch_of_people_who_all_left_finishes_without_sending(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port)], 3)
    loop.populate(campaign)
    Subscriber.objects.update(status="unsubscribed")

    start_sending(campaign)

    assert sandbox.received == [] and status_of(campaign) == "finished"
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"skipped"}
