"""One campaign, many senders: several workers send it at once, each address once, and pause,
cancel and auto-pause act between two messages. Asserts on what a real SMTP server received."""

import contextlib
import os
import signal
import threading
import time
from collections import Counter

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker

from campaigns.models import Campaign, Delivery, Sender
from campaigns.sending import leases, loop
from smtp_settings.pool import close_all_pools
from tests.campaigns.test_exactly_once import in_thread
from tests.campaigns.test_sending import (
    assert_everyone_received_once,
    make_campaign,
    received_by_address,
    sent_count,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def sent_by_cluster(campaign: Campaign, clusters) -> Counter:
    """Messages each qcluster's workers sent (a worker is in its cluster's process group)."""
    groups = {cluster.pid: cluster for cluster in clusters}
    shares = Counter()
    for owner, sent in Sender.objects.filter(campaign=campaign).values_list("owner", "sent"):
        try:
            shares[groups.get(os.getpgid(int(owner.rpartition(":")[2])))] += sent
        except ProcessLookupError:  # a worker of a killed cluster
            shares[None] += sent
    return shares


def test_three_workers_send_one_campaign_together_each_address_once(smtp_sandbox, make_server, workers):
    sandbox = smtp_sandbox(latency_ms=5, pipelining=True)  # a few seconds: time for all three to join
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=6)], 5000)
    clusters = [workers(Q_WORKERS="1", CAMPAIGN_MAX_SENDERS="3") for _ in range(3)]

    campaign.launch()
    wait_for(lambda: status_of(campaign) == "finished", 240, "the campaign to finish")

    assert_everyone_received_once(sandbox, campaign)
    shares = sent_by_cluster(campaign, clusters)
    assert all(shares[cluster] > 0 for cluster in clusters), shares
    assert sum(shares.values()) == 5000
    assert sandbox.summary()["max_concurrent_sessions"] <= 6  # the server's ceiling, across all of them


def test_killing_one_of_three_workers_mid_run_still_sends_each_address_once(smtp_sandbox, make_server, workers):
    """SIGKILL a whole qcluster while the three send: the others take its rows over (its
    processes are gone from this host: at once). A message whose final dot was being recorded
    at the instant of the kill is flagged ambiguous, never sent twice."""
    sandbox = smtp_sandbox(latency_ms=2, pipelining=True)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=6)], 5000)
    clusters = [workers(Q_WORKERS="1", CAMPAIGN_MAX_SENDERS="3") for _ in range(3)]
    campaign.launch()
    wait_for(lambda: len(live_clusters(campaign, clusters)) == 3, 60, "all three clusters to send")
    wait_for(lambda: sent_count(campaign) >= 1500, 120, "1,500 messages out")

    victim = next(iter(live_clusters(campaign, clusters)))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = len(sandbox.received)
    wait_for(lambda: status_of(campaign) == "finished", 240, "the campaign to finish")

    assert killed_at < 5000
    counts = received_by_address(sandbox)
    assert max(counts.values()) == 1, "a message was received twice"
    everyone = set(campaign.deliveries.values_list("subscriber__email", flat=True))
    flagged = set(campaign.deliveries.filter(ambiguous=True).values_list("subscriber__email", flat=True))
    missing = everyone - set(counts)
    assert missing <= flagged
    assert len(flagged) <= 2 * 6  # per connection: the message in flight, and one awaiting its record
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}


def live_clusters(campaign: Campaign, clusters) -> set:
    """The clusters whose workers hold a live lease on the campaign now."""
    groups = {cluster.pid: cluster for cluster in clusters}
    live = Sender.objects.filter(campaign=campaign, lease_until__gt=timezone.now())
    found = set()
    for owner in live.values_list("owner", flat=True):
        with contextlib.suppress(ProcessLookupError):  # a worker of a killed cluster
            found.add(groups.get(os.getpgid(int(owner.rpartition(":")[2]))))
    return found - {None}


def test_senders_follow_the_capacity_of_the_servers(make_server, settings):
    settings.CAMPAIGN_MAX_SENDERS = 4
    assert leases.senders_wanted(make_campaign([make_server(max_conns=1)], 1)) == 1
    assert leases.senders_wanted(make_campaign([make_server(max_conns=5)], 1)) == 3
    assert leases.senders_wanted(make_campaign([make_server(max_conns=50)], 1)) == 4
    assert leases.senders_wanted(make_campaign([make_server(max_conns=50)], 1, rate_limit=1)) == 1
    assert leases.senders_wanted(make_campaign([make_server(max_conns=50, rate_limit=2)], 1)) == 1
    learned = make_server(max_conns=50, learned_max_conns=2)
    assert leases.senders_wanted(make_campaign([learned], 1)) == 1


def test_a_campaign_rate_is_shared_out_among_its_senders(make_server, settings):
    settings.CAMPAIGN_MAX_SENDERS = 4
    campaign = make_campaign([make_server(max_conns=50)], 1, rate_limit=1000)  # two senders at 500/s
    Campaign.objects.filter(pk=campaign.pk).update(status="running")
    lease = leases.join(campaign.pk)

    sender = loop.CampaignSender(campaign, lease, leases.SenderKeeper(lease))

    assert leases.senders_wanted(campaign) == 2 and sender.rate == 500


def test_recruiting_never_asks_for_more_than_twice_the_senders_wanted(make_server, settings):
    """Fewer workers than senders wanted (none here): the tasks asked for stay bounded."""
    settings.CAMPAIGN_MAX_SENDERS = 4
    campaign = make_campaign([make_server(max_conns=50)], 1)
    Campaign.objects.filter(pk=campaign.pk).update(status="running")
    leases.join(campaign.pk)
    queued = get_broker().queue_size()

    for _ in range(10):
        loop.recruit(campaign)

    assert get_broker().queue_size() - queued == 2 * 4
    campaign.pause()
    loop.send_campaign(campaign.pk)  # one of them starts (and ends: the campaign was paused meanwhile)
    assert Campaign.objects.values_list("senders_asked", flat=True).get(pk=campaign.pk) == 2 * 4 - 1


def test_joins_beyond_what_the_servers_can_use_are_refused(make_server, settings):
    settings.CAMPAIGN_MAX_SENDERS = 4
    campaign = make_campaign([make_server(max_conns=4)], 1)
    Campaign.objects.filter(pk=campaign.pk).update(status="running")

    joined = [leases.join(campaign.pk) for _ in range(3)]

    assert [lease is not None for lease in joined] == [True, True, False]
    leases.release(joined[0], 0)
    assert leases.join(campaign.pk) is not None


def test_concurrent_joins_never_exceed_what_the_servers_can_use(make_server, settings):
    settings.CAMPAIGN_MAX_SENDERS = 4
    campaign = make_campaign([make_server(max_conns=4)], 1)  # two senders
    Campaign.objects.filter(pk=campaign.pk).update(status="running")
    start, joined = threading.Barrier(6), []
    threads = [in_thread(lambda: (start.wait(), joined.append(leases.join(campaign.pk)))) for _ in range(6)]
    for thread in threads:
        thread.join(timeout=30)

    assert sum(lease is not None for lease in joined) == 2
    assert Sender.objects.filter(campaign=campaign).count() == 2


# -- controls that act between two messages --


def test_pause_at_one_message_a_second_sends_nothing_that_was_not_in_flight(smtp_sandbox, make_server, sender_client):
    """At 1 msg/s a batch holds a dozen messages. After the click, the server gets only what
    had passed its final dot before it (at most one per connection), and nothing later."""
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=2)], 40, rate_limit=1)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    sender = in_thread(lambda: loop.send_campaign(campaign.pk))
    wait_for(lambda: len(sandbox.received) >= 3, 30, "3 messages out")

    clicked_at = timezone.now()
    response = sender_client.post(reverse("campaigns:pause", args=[campaign.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    sender.join(timeout=10)
    time.sleep(2)  # two more turns of the rate, had anything been left going

    assert not sender.is_alive(), "the sender did not stop within the 10 s wait"
    dotted_before = Delivery.objects.filter(campaign=campaign, final_dot_at__lt=clicked_at).count()
    assert len(sandbox.received) <= dotted_before + 0  # nothing whose dot came after the click
    assert len(sandbox.received) == sent_count(campaign)
    assert not campaign.deliveries.filter(status="sending").exists()
    assert campaign.deliveries.filter(status="pending").count() == 40 - len(sandbox.received)


def test_cancel_mid_batch_stops_between_two_messages(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 200
    sandbox = smtp_sandbox(latency_ms=5)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=1)], 300)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    sender = in_thread(lambda: loop.send_campaign(campaign.pk))
    wait_for(lambda: len(sandbox.received) >= 20, 30, "20 messages out")

    Campaign.objects.get(pk=campaign.pk).cancel()
    at_click = len(sandbox.received)
    sender.join(timeout=10)

    assert len(sandbox.received) <= at_click + 1  # the one in flight, if any
    statuses = Counter(campaign.deliveries.values_list("status", flat=True))
    assert statuses["sent"] == len(sandbox.received)
    assert statuses["sent"] + statuses["cancelled"] == 300  # nothing left pending or in flight


def test_auto_pause_fires_at_exactly_the_configured_streak(smtp_sandbox, make_server):
    """100 rejections in a row, then addresses that would be accepted, all in one batch: the
    campaign pauses at the 50th failure, before the 51st is tried."""
    sandbox = smtp_sandbox(reject=r"^reader\d{1,2}@")  # reader0 to reader99
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=1)], 150, auto_pause_after=50)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)

    loop.send_campaign(campaign.pk)

    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert campaign.pause_reason.startswith("Paused after 50 failed deliveries in a row. Last reply: 550")
    assert campaign.deliveries.filter(status="failed").count() == 50
    assert sandbox.summary()["rejected_recipients"] == 50
    assert sandbox.received == []


def test_a_success_resets_the_streak_in_delivery_order(smtp_sandbox, make_server):
    """49 failures, a success, 49 failures: never 50 in a row, so no pause."""
    sandbox = smtp_sandbox(reject=r"^reader(?!49@)\d{1,2}@")
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=1)], 99, auto_pause_after=50)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)

    loop.send_campaign(campaign.pk)

    assert status_of(campaign) == "finished"
    assert list(received_by_address(sandbox)) == ["reader49@example.test"]


def test_several_senders_in_one_process_cannot_send_a_row_twice(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_MAX_SENDERS = 4
    settings.CAMPAIGN_BATCH_SIZE = 20
    sandbox = smtp_sandbox(latency_ms=1)
    campaign = make_campaign([make_server(port=sandbox.port, max_conns=8)], 800)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    start = threading.Barrier(4)
    senders = [in_thread(lambda: (start.wait(), loop.send_campaign(campaign.pk))) for _ in range(4)]
    for sender in senders:
        sender.join(timeout=120)
    close_all_pools()

    if status_of(campaign) != "finished":  # a late joiner found nothing left and no peer at the end
        loop.send_campaign(campaign.pk)
    assert_everyone_received_once(sandbox, campaign)
    assert Sender.objects.filter(campaign=campaign, sent__gt=0).count() >= 2
