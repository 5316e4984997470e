"""Never twice, whatever the timing: leases renewed while a batch is out, a fencing token
checked at every final dot, and whatever a sending task trips over. Each test asserts on
what a real SMTP server received."""

import os
import signal
import threading
import time
import tracemalloc

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone
from django_q.tasks import async_task

from campaigns import eventlog
from campaigns.models import Campaign, Delivery, Event, Sender
from campaigns.sending import leases, loop, watchdog
from campaigns.sending.recovery import recover_orphans
from tests.campaigns.test_sending import (
    assert_everyone_received_once,
    make_campaign,
    received_by_address,
    sent_count,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(target) -> threading.Thread:
    """Run `target` in a thread that closes its own database connection."""

    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def running(campaign: Campaign) -> Campaign:
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    return campaign


# -- the fence --


def claimed_batch(campaign: Campaign, size: int) -> tuple[loop.CampaignSender, list]:
    """A sender that joined the campaign, with a batch of `size` deliveries claimed in hand."""
    lease = leases.join(campaign.pk)
    loop.populate(campaign)
    keeper = leases.SenderKeeper(lease)
    keeper.look()
    sender = loop.CampaignSender(campaign, lease, keeper)
    return sender, leases.claimed(lease, leases.claim(lease, size))


def let_the_lease_run_out(campaign: Campaign) -> None:
    Sender.objects.filter(campaign=campaign).exclude(lease_until=None).update(lease_until="2000-01-01T00:00:00Z")


def test_a_sender_whose_rows_were_recovered_by_another_cannot_finish_a_message(smtp_sandbox, make_server):
    """A sender stalls with a claimed batch in hand; its lease runs out and another sender
    recovers its rows. When the first one wakes up, the server gets nothing from it."""
    sandbox = smtp_sandbox(pipelining=True)
    server = make_server(port=sandbox.port)
    campaign = running(make_campaign([server], 6))
    sender, batch = claimed_batch(campaign, 6)
    assert len(batch) == 6

    let_the_lease_run_out(campaign)
    recover_orphans(campaign)  # what any other sender does when it joins
    sender.send(server, batch)  # wakes up and carries on with its batch

    assert sandbox.received == []
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"pending"}
    loop.send_campaign(campaign.pk)
    assert_everyone_received_once(sandbox, campaign)


def test_a_sender_whose_lease_ran_out_cannot_finish_a_message_before_any_recovery(smtp_sandbox, make_server):
    """Another sender joined but has not recovered anything yet: the stalled sender's claims
    still stand, and only its lease says they are no longer worth anything."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    campaign = running(make_campaign([server], 3))
    sender, batch = claimed_batch(campaign, 3)

    let_the_lease_run_out(campaign)
    assert leases.join(campaign.pk)
    sender.send(server, batch)

    assert sandbox.received == []


def test_a_lease_that_ran_out_is_never_renewed(make_server):
    campaign = running(make_campaign([make_server()], 1))
    lease = leases.join(campaign.pk)
    assert leases.renew(lease)

    let_the_lease_run_out(campaign)

    assert not leases.renew(lease)
    assert Sender.objects.get(pk=lease.token).lease_until.year == 2000


def test_a_message_refused_at_its_dot_and_then_fenced_off_goes_back_in_line(smtp_sandbox, make_server):
    """Its first dot got a 421 (not delivered), and by the time of the second the lease had
    run out: it must be sent again later, not taken for delivered by its earlier dot."""
    sandbox = smtp_sandbox()
    campaign = running(make_campaign([make_server(port=sandbox.port, max_conns=1)], 3))
    refused = []

    def refuse_first_dot(stage, _sandbox):
        if stage == "dot" and not refused:
            refused.append(in_thread(lambda: let_the_lease_run_out(campaign)))
            refused[0].join()
            return "421 4.4.2 Closing connection"
        return None

    sandbox.fault = refuse_first_dot
    loop.send_campaign(campaign.pk)  # stops at the second dot: its lease ran out
    assert sandbox.received == []
    assert set(campaign.deliveries.values_list("status", "final_dot_at")) == {("pending", None)}
    loop.send_campaign(campaign.pk)  # the sender started in its place

    assert_everyone_received_once(sandbox, campaign)
    assert not campaign.deliveries.filter(ambiguous=True).exists()


def test_a_sender_whose_lease_expired_unnoticed_stops_before_the_dot(smtp_sandbox, make_server):
    """Nobody took over yet, but the lease is out: that sender may no longer finish anything."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    campaign = running(make_campaign([server], 4))
    sender, batch = claimed_batch(campaign, 4)

    let_the_lease_run_out(campaign)
    sender.send(server, batch)

    assert sandbox.received == []
    assert set(campaign.deliveries.values_list("status", "attempts")) == {("pending", 0)}


def test_a_fenced_off_sender_cannot_overwrite_what_recovery_decided(smtp_sandbox, make_server):
    """Its dot was recorded, then it stalled; recovery counted the message sent (ambiguous).
    When the stalled sender wakes up and writes its own outcome, the row does not change."""
    campaign = running(make_campaign([make_server()], 1))
    sender, [delivery] = claimed_batch(campaign, 1)
    Delivery.objects.filter(pk=delivery.pk).update(final_dot_at=timezone.now())

    let_the_lease_run_out(campaign)
    recover_orphans(campaign)
    delivery.status, delivery.last_reply = "deferred", "451 the link broke before the reply"
    loop._save_outcomes([delivery], sender.lease)

    assert Delivery.objects.values_list("status", "ambiguous").get(pk=delivery.pk) == ("sent", True)


def test_an_outcome_write_that_fails_once_is_tried_again(smtp_sandbox, make_server, settings, monkeypatch):
    settings.CAMPAIGN_BATCH_SIZE = 5
    sandbox = smtp_sandbox()
    campaign = running(make_campaign([make_server(port=sandbox.port)], 12))
    save_outcomes, failures = loop._save_outcomes, iter([DatabaseError("database is locked")])

    def locked_once(deliveries, lease, confirm, then):
        if deliveries and (error := next(failures, None)):
            raise error
        return save_outcomes(deliveries, lease, confirm, then)

    monkeypatch.setattr(loop, "_save_outcomes", locked_once)
    loop.send_campaign(campaign.pk)

    assert_everyone_received_once(sandbox, campaign)
    assert not campaign.deliveries.filter(ambiguous=True).exists()
    assert Campaign.objects.get(pk=campaign.pk).task_failures == 0


# -- renewal while a batch is out --


def test_a_batch_slower_than_the_lease_keeps_its_sender_while_the_watchdog_fires(smtp_sandbox, make_server, settings):
    """Each message takes ~0.4 s and the batch ~5 s, against a 2 s lease. The lease is renewed
    from its own thread, so neither the watchdog nor a second sender ever takes over."""
    settings.CAMPAIGN_LEASE_S = 2
    sandbox = smtp_sandbox(latency_ms=100)
    campaign = running(make_campaign([make_server(port=sandbox.port, max_conns=1)], 12))
    sender = in_thread(lambda: loop.send_campaign(campaign.pk))
    wait_for(lambda: Sender.objects.filter(campaign=campaign).exists(), 10, "the sender")
    takeovers = []

    def compete():
        while sender.is_alive():
            watchdog.watchdog()
            if lease := leases.join(campaign.pk):  # one connection: one sender at a time
                takeovers.append(status_of(campaign))
                leases.release(lease, 0)
            time.sleep(0.05)

    competitor = in_thread(compete)
    sender.join(timeout=60)
    competitor.join(timeout=10)

    assert_everyone_received_once(sandbox, campaign)
    assert "running" not in takeovers  # only once the campaign had finished, if at all
    assert status_of(campaign) == "finished"


def test_a_claim_holds_what_the_slowest_rate_sends_in_a_quarter_of_the_lease(make_server, settings):
    settings.CAMPAIGN_LEASE_S = 60
    settings.CAMPAIGN_BATCH_SIZE = 200
    fast, slow = make_server(name="fast"), make_server(name="slow", rate_limit=0.5)
    campaign = running(make_campaign([fast, slow], 1, rate_limit=1))
    lease = leases.join(campaign.pk)
    sender = loop.CampaignSender(campaign, lease, leases.SenderKeeper(lease))

    assert sender.claim_size(fast) == 15  # the campaign's 1 msg/s for 15 s
    assert sender.claim_size(slow) == 7  # the server's 0.5 msg/s
    Campaign.objects.filter(pk=campaign.pk).update(rate_limit=0)
    campaign.refresh_from_db()
    unlimited = loop.CampaignSender(campaign, lease, leases.SenderKeeper(lease))
    assert unlimited.claim_size(fast) == 200 and unlimited.claim_size(slow) == 7


# -- two senders at once --


def test_two_senders_started_at_once_send_each_address_once(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(latency_ms=2)
    campaign = running(make_campaign([make_server(port=sandbox.port, max_conns=3)], 300))
    start = threading.Barrier(2)
    senders = [in_thread(lambda: (start.wait(), loop.send_campaign(campaign.pk))) for _ in range(2)]
    for sender in senders:
        sender.join(timeout=60)

    if status_of(campaign) != "finished":  # the loser left at once; the winner may have handed over
        loop.send_campaign(campaign.pk)
    assert_everyone_received_once(sandbox, campaign)


def test_two_workers_given_the_same_campaign_twice_send_each_address_once(smtp_sandbox, make_server, workers):
    sandbox = smtp_sandbox(latency_ms=2)
    campaign = running(make_campaign([make_server(port=sandbox.port, max_conns=3)], 600))
    for _ in range(2):
        async_task("campaigns.tasks.send_campaign", campaign.pk)

    workers(Q_WORKERS="2")
    wait_for(lambda: status_of(campaign) == "finished", 120, "the campaign to finish")

    assert_everyone_received_once(sandbox, campaign)


# -- stopped past the lease, then continued --


def _sender_pid(campaign: Campaign) -> int:
    """The process of the campaign's live sender (waiting out a hand-over between two tasks)."""

    def owner():
        live = Sender.objects.filter(campaign=campaign, lease_until__gt=timezone.now()).order_by("-pk")
        return live.values_list("owner", flat=True).first()

    wait_for(owner, 30, "a sender to hold the campaign")
    return int(owner().rpartition(":")[2])


def test_a_sender_stopped_past_its_lease_and_continued_completes_nothing_it_lost(smtp_sandbox, make_server, workers):
    """SIGSTOP the worker that is sending, let its 2 s lease run out, let the watchdog hand the
    campaign to another worker, then SIGCONT the first one while the second is still sending.
    The first one wakes up mid-batch: every message it no longer owns is stopped at the fence."""
    sandbox = smtp_sandbox(latency_ms=40)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=2)], 120)
    campaign.launch()
    workers(Q_WORKERS="2", CAMPAIGN_LEASE_S="2")
    wait_for(lambda: len(sandbox.received) >= 10, 60, "10 messages out")

    stopped = _sender_pid(campaign)
    os.kill(stopped, signal.SIGSTOP)
    try:
        stopped_at = len(sandbox.received)
        time.sleep(4)  # past the 2 s lease, with room for a renewal just before the stop
        watchdog.watchdog()  # enqueues a sender; the cluster's other worker takes it
        wait_for(lambda: len(sandbox.received) >= stopped_at + 10, 60, "the second worker to send")
        assert _sender_pid(campaign) != stopped
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_for(lambda: status_of(campaign) == "finished", 120, "the campaign to finish")
    time.sleep(1)  # whatever the continued worker still tries, it tries now

    counts = received_by_address(sandbox)
    assert max(counts.values()) == 1, "a message was received twice"
    everyone = set(campaign.deliveries.values_list("subscriber__email", flat=True))
    flagged = set(campaign.deliveries.filter(ambiguous=True).values_list("subscriber__email", flat=True))
    assert everyone - set(counts) <= flagged
    assert len(flagged) <= 2 * 2  # per connection of the stopped sender: in flight, and awaiting its record
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}


# -- a task that trips over something --


def test_a_failing_task_puts_its_rows_back_and_pauses_the_campaign_after_three(
    smtp_sandbox, make_server, settings, monkeypatch
):
    settings.CAMPAIGN_BATCH_SIZE = 5
    sandbox = smtp_sandbox()
    campaign = running(make_campaign([make_server(port=sandbox.port)], 30))

    def disk_full(*args):
        raise DatabaseError("database or disk is full")

    monkeypatch.setattr(loop, "_save_outcomes", disk_full)
    for _ in range(3):
        loop.send_campaign(campaign.pk)  # what the watchdog would start each minute
        assert not campaign.deliveries.filter(status="sending").exists()

    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert "3 sending tasks in a row failed" in campaign.pause_reason
    assert "database or disk is full" in campaign.pause_reason
    errors = Event.objects.filter(campaign=campaign, kind=eventlog.TASK_ERROR)
    assert [event.detail["failures_in_a_row"] for event in errors.order_by("id")] == [1, 2, 3]
    watchdog.watchdog()
    assert status_of(campaign) == "paused"  # no restart loop

    monkeypatch.undo()
    campaign.resume()
    loop.send_campaign(campaign.pk)
    assert_everyone_received_once(sandbox, campaign)  # what went out before each failure, never again
    assert Campaign.objects.get(pk=campaign.pk).task_failures == 0


# -- memory --


def test_large_messages_are_rendered_as_they_are_sent_within_the_batch_memory(sandbox_process, make_server, settings):
    """Twenty 1 MB messages, 8 MB for the batch. Rendered ahead of sending (or with no budget:
    56 MiB measured for thirty) the batch would hold them all at once."""
    settings.CAMPAIGN_BATCH_MEMORY_MB = 8
    settings.CAMPAIGN_MAX_BODY_BYTES = 2 * 2**20
    sandbox = sandbox_process("--quiet")
    campaign = running(make_campaign([make_server(port=sandbox.port, max_conns=4)], 20))
    html = "<p>{{ subscriber.name }}</p>\n" + "<p>Some news, at length.</p>\n" * 40_000
    Campaign.objects.filter(pk=campaign.pk).update(html_body=html, text_body="News for {{ subscriber.name }}")

    tracemalloc.start()
    try:
        loop.send_campaign(campaign.pk)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    summary = sandbox.stop()
    assert summary["received"] == summary["unique_message_ids"] == 20 and summary["duplicates"] == 0
    assert sent_count(campaign) == 20
    assert peak_bytes < 16 * 2**20, f"peak {peak_bytes / 2**20:.0f} MiB"
