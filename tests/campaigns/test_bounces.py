"""Bounces and complaints of campaigns: hard and soft bounces seen at send time, VERP return
paths that map a bounce back to its delivery, what a bounce does to the delivery, the
subscriber and the campaign's counters, and the guard rails that pause a running campaign.
Asserts on what a real SMTP server (the sandbox) received and on the database."""

import re
import threading
import time

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns import eventlog
from campaigns.models import Campaign, Delivery, Event, Subscriber
from campaigns.sending import loop
from smtp_settings.bounces import dsn, intake, verp
from smtp_settings.bounces.record import bounce_recorded, record
from smtp_settings.models import Bounce, Suppression
from tests import hostile
from tests.campaigns.test_sending import (
    make_campaign,
    received_by_address,
    sent_count,
    start_sending,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

HARD, SOFT, COMPLAINT = Bounce.Kind.HARD, Bounce.Kind.SOFT, Bounce.Kind.COMPLAINT
DOMAIN = "bounces.example.test"


def delivery_to(campaign: Campaign, email: str) -> Delivery:
    return campaign.deliveries.select_related("subscriber").get(subscriber__email=email)


def subscriber_status(email: str) -> str:
    return Subscriber.objects.values_list("status", flat=True).get(email=email)


def complain(delivery: Delivery) -> Bounce:
    """A complaint about a delivery, as an ESP's webhook or an ARF report names it."""
    return record(COMPLAINT, Bounce.Source.WEBHOOK, delivery.subscriber.email, reference=f"d{delivery.pk}")


def sent_campaign(subscribers: int, sent: int, make_server, **fields) -> Campaign:
    """A running campaign whose first `sent` deliveries went out (no sender at work)."""
    campaign = make_campaign([make_server()], subscribers, **fields)
    loop.populate(campaign)
    first = campaign.deliveries.order_by("pk").values("pk")[:sent]
    Delivery.objects.filter(pk__in=first).update(status=Delivery.Status.SENT)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    return campaign


# -- at send time --


def test_recipients_refused_as_unknown_are_hard_bounces_suppressed_and_logged(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(reject=r"^reader[12]@")
    server = make_server(port=sandbox.port)
    campaign = make_campaign([server], 5)

    start_sending(campaign)
    eventlog.flush()

    gone = {"reader1@example.test", "reader2@example.test"}
    bounces = Bounce.objects.order_by("email")
    assert [(b.kind, b.source, b.email, b.code, b.status, b.server) for b in bounces] == [
        (HARD, "send", email, 550, "5.1.1", server) for email in sorted(gone)
    ]
    for bounce in bounces:
        delivery = delivery_to(campaign, bounce.email)
        assert bounce.reference == f"d{delivery.pk}"
        assert bounce.text == f"<{bounce.email}>: Recipient address rejected"
        assert (delivery.status, delivery.outcome) == ("failed", "bounced") and delivery.outcome_at
        assert subscriber_status(bounce.email) == "bounced"
    assert dict(Suppression.objects.values_list("email", "reason")) == dict.fromkeys(gone, "hard_bounce")
    logged = Event.objects.filter(kind="bounce", campaign=campaign)
    assert sorted(logged.values_list("recipient", flat=True)) == sorted(gone)
    assert {event.detail["bounce_id"] for event in logged} == set(bounces.values_list("pk", flat=True))
    campaign.refresh_from_db()
    assert (campaign.status, campaign.hard_bounces, campaign.complaints) == ("finished", 2, 0)

    again = make_campaign([server], 5)  # the same list: the bounced addresses are skipped
    start_sending(again)
    assert received_by_address(sandbox)["reader1@example.test"] == 0
    skipped = again.deliveries.filter(status="skipped")
    assert set(skipped.values_list("subscriber__email", flat=True)) == gone
    assert set(skipped.values_list("last_reply", flat=True)) == {"the address is on the suppression list"}
    assert again.deliveries.filter(status="sent").count() == 3


@pytest.mark.parametrize(
    "reply, bounced",
    [
        ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", True),
        ("550 5.2.1 The email account that you tried to reach is disabled.", True),
        ("552 5.2.2 The email account that you tried to reach is over quota.", False),
        ("554 5.7.1 <{address}>: Relay access denied", False),
    ],
)
def test_only_a_refusal_about_the_address_is_a_bounce(smtp_sandbox, make_server, reply, bounced):
    sandbox = smtp_sandbox(reject=r"^reader0@", reject_reply=reply)
    campaign = make_campaign([make_server(port=sandbox.port)], 2)

    start_sending(campaign)

    delivery = delivery_to(campaign, "reader0@example.test")
    assert delivery.status == "failed"
    assert Bounce.objects.filter(kind=HARD, reference=f"d{delivery.pk}").exists() is bounced
    assert subscriber_status("reader0@example.test") == ("bounced" if bounced else "active")
    assert delivery.outcome == ("bounced" if bounced else "")


def test_a_hostile_refusal_is_recorded_bounded_and_shown_escaped(hostile_smtp, make_server, viewer_client):
    lines = [f"550-5.1.1 <script>alert({n})</script> adresse inconnue é \x1b[2J" for n in range(98)]
    hostile = hostile_smtp(replies={"RCPT": "\r\n".join([*lines, "550 5.1.1 user unknown"])})
    campaign = make_campaign([make_server(port=hostile.port)], 1)

    start_sending(campaign)
    eventlog.flush()

    [bounce] = Bounce.objects.all()
    assert (bounce.kind, bounce.status, bounce.email) == (HARD, "5.1.1", "reader0@example.test")
    assert bounce.text.startswith("<script>alert(0)</script> adresse inconnue é") and len(bounce.text) == 2000
    assert len(Event.objects.get(kind="bounce").text) <= 2000
    page = viewer_client.get("/logs/").content.decode()
    assert "&lt;script&gt;alert(0)&lt;/script&gt;" in page and "<script>alert(" not in page


@pytest.mark.parametrize(
    "sender_refused",
    [
        "550 5.1.0 <bounces+d1-0123456789abcdef@bounces.example.test>: Sender address rejected: User unknown",
        "550 5.1.0 Sender denied",  # Exchange
        "553 5.1.8 <news@example.test>: Sender address rejected: Domain not found",
    ],
)
@pytest.mark.parametrize("ehlo", [hostile.DEFAULT_REPLIES["EHLO"], hostile.PIPELINING_EHLO], ids=["", "pipelined"])
def test_a_refused_sender_bounces_no_recipient(hostile_smtp, make_server, sender_refused, ehlo):
    """The reply to MAIL FROM decides every recipient of the message, and speaks of the sender
    (a return path the server cannot verify): nobody's address is bounced or suppressed."""
    server = hostile_smtp(replies={"EHLO": ehlo, "MAIL": sender_refused})
    campaign = make_campaign([make_server(port=server.port, bounce_domain=DOMAIN)], 3, auto_pause_after=0)

    start_sending(campaign)

    assert set(campaign.deliveries.values_list("status", "last_code", "outcome")) == {
        ("failed", int(sender_refused[:3]), "")
    }
    assert not Bounce.objects.exists() and not Suppression.objects.exists()
    assert set(Subscriber.objects.values_list("status", flat=True)) == {"active"}
    assert Campaign.objects.get(pk=campaign.pk).hard_bounces == 0


def test_a_message_refused_after_its_data_bounces_no_recipient(hostile_smtp, make_server):
    """A refusal at the final dot is about the message (its content, its size), whatever
    enhanced code it gives: the recipients' own RCPT replies accepted them."""
    server = hostile_smtp(replies={"dot": "554 5.1.1 Message refused: a recipient is unknown here"})
    campaign = make_campaign([make_server(port=server.port)], 2, auto_pause_after=0)

    start_sending(campaign)

    assert set(campaign.deliveries.values_list("status", "last_code")) == {("failed", 554)}
    assert not Bounce.objects.exists() and not Suppression.objects.exists()


@pytest.mark.parametrize("limit, subscriber", [(3, "active"), (1, "bounced")])
def test_a_delivery_whose_rcpt_deferrals_ran_out_is_a_soft_bounce(
    smtp_sandbox, make_server, settings, limit, subscriber
):
    settings.CAMPAIGN_RETRY_DELAY_S = 0
    settings.SOFT_BOUNCE_LIMIT = limit
    sandbox = smtp_sandbox(reject=r"^reader", reject_reply="450 4.3.0 <{address}>: Temporary failure")
    campaign = make_campaign([make_server(port=sandbox.port, retries=1)], 2, auto_pause_after=0)

    start_sending(campaign)

    for delivery in campaign.deliveries.select_related("subscriber"):
        assert (delivery.status, delivery.attempts, delivery.outcome) == ("failed", 2, "soft")
        [bounce] = Bounce.objects.filter(reference=f"d{delivery.pk}")  # one, when the retries ran out
        assert (bounce.kind, bounce.email, bounce.code, bounce.status) == (
            SOFT,
            delivery.subscriber.email,
            450,
            "4.3.0",
        )
        assert subscriber_status(delivery.subscriber.email) == subscriber
    assert Campaign.objects.get(pk=campaign.pk).hard_bounces == 0


def test_a_delivery_deferred_at_its_data_until_its_retries_ran_out_is_no_bounce(smtp_sandbox, make_server, settings):
    """451 after the final dot: the server could not take the message then, which says
    nothing about the address."""
    settings.CAMPAIGN_RETRY_DELAY_S = 0
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    campaign = make_campaign([make_server(port=sandbox.port, retries=1)], 2, auto_pause_after=0)

    start_sending(campaign)

    assert set(campaign.deliveries.values_list("status", "attempts", "last_code", "outcome")) == {
        ("failed", 2, 451, "")
    }
    assert not Bounce.objects.exists()


def test_a_delivery_outcome_and_its_bounce_are_written_together_or_not_at_all(smtp_sandbox, make_server):
    """The bounce is recorded in the transaction that writes the delivery's outcome: when that
    fails after the UPDATE (here a receiver of the bounce raises), neither is written, and the
    write tried again writes both, once. A sender killed between them could lose neither."""
    sandbox = smtp_sandbox(reject=r"^reader0@")
    campaign = make_campaign([make_server(port=sandbox.port)], 2)
    loop.populate(campaign)
    delivery = delivery_to(campaign, "reader0@example.test")
    calls = []

    def committed() -> tuple:
        """What another connection sees: only what was committed."""
        seen = []

        def read():
            try:
                seen.append((Delivery.objects.get(pk=delivery.pk).status, Bounce.objects.count()))
            finally:
                connection.close()

        reader = threading.Thread(target=read)
        reader.start()
        reader.join()
        return seen[0]

    def fails_once(sender, bounce, **kwargs):
        calls.append((Delivery.objects.get(pk=delivery.pk).status, committed()))
        if len(calls) == 1:
            raise DatabaseError("disk I/O error")

    bounce_recorded.connect(fails_once)
    try:
        start_sending(campaign)
    finally:
        bounce_recorded.disconnect(fails_once)

    # Each time, inside the transaction: the outcome written, nothing of it committed. The
    # second time shows that the first rolled back.
    assert calls == [("failed", ("sending", 0)), ("failed", ("sending", 0))]
    assert sandbox.summary()["rejected_recipients"] == 1  # not sent again
    [bounce] = Bounce.objects.all()
    assert (bounce.kind, bounce.reference) == (HARD, f"d{delivery.pk}")
    assert Delivery.objects.values_list("status", "outcome").get(pk=delivery.pk) == ("failed", "bounced")
    assert list(Suppression.objects.values_list("email", flat=True)) == ["reader0@example.test"]
    assert Campaign.objects.get(pk=campaign.pk).hard_bounces == 1


def test_a_bounce_recorded_for_a_row_no_longer_ours_is_not_recorded(smtp_sandbox, make_server):
    """The sender lost its claim while the recipient was refused (recovery put the row back in
    line): its outcome is not written, nor is its bounce. The next pass records it, once."""
    done = []

    def fault(stage, sandbox):
        if stage == "RCPT" and not done:
            done.append(threading.Thread(target=lambda: (take_back(), connection.close())))
            done[0].start()
            done[0].join()

    def take_back():
        Delivery.objects.filter(campaign=campaign).update(status="pending", claim_token=None)

    sandbox = smtp_sandbox(reject=r"^reader0@", fault=fault)
    campaign = make_campaign([make_server(port=sandbox.port)], 1)

    start_sending(campaign)

    assert sandbox.summary()["rejected_recipients"] == 2
    assert Bounce.objects.count() == 1
    assert Campaign.objects.get(pk=campaign.pk).hard_bounces == 1


# -- VERP --


def test_each_delivery_goes_out_with_a_return_path_that_names_it(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    campaign = make_campaign([make_server(port=sandbox.port, bounce_domain=DOMAIN, max_conns=2)], 6)

    start_sending(campaign)

    assert len(sandbox.received) == 6
    for received in sandbox.received:
        delivery = delivery_to(campaign, received.rcpt_tos[0])
        assert received.mail_from.startswith(f"bounces+d{delivery.pk}-") and received.mail_from.endswith(f"@{DOMAIN}")
        assert verp.reference_of(received.mail_from) == f"d{delivery.pk}"
        assert b"\nFrom: News <news@example.test>\r\n" in received.data

    # A bounce that comes back to that address maps to its delivery (as the listener records it).
    first = sandbox.received[0]
    record(HARD, Bounce.Source.LISTENER, first.rcpt_tos[0], reference=verp.reference_of(first.mail_from))
    assert delivery_to(campaign, first.rcpt_tos[0]).outcome == "bounced"
    assert subscriber_status(first.rcpt_tos[0]) == "bounced"


def test_without_a_bounce_domain_the_return_path_is_the_from_address(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    campaign = make_campaign([make_server(port=sandbox.port)], 2)

    start_sending(campaign)

    assert [received.mail_from for received in sandbox.received] == ["news@example.test"] * 2


# -- what a bounce does --


def test_a_complaint_marks_the_delivery_and_the_subscriber_and_counts_once(make_server):
    campaign = sent_campaign(3, 3, make_server, max_complaint_rate=0)
    delivery = delivery_to(campaign, "reader0@example.test")

    complain(delivery)
    complain(delivery)  # the same report twice (a webhook retried)
    eventlog.flush()

    delivery.refresh_from_db()
    assert (delivery.outcome, subscriber_status("reader0@example.test")) == ("complained", "complained")
    assert Campaign.objects.get(pk=campaign.pk).complaints == 1
    assert Event.objects.filter(kind="complaint", campaign=campaign).count() == 2  # both are in the log
    assert Suppression.objects.get(email="reader0@example.test").reason == "complaint"


def test_a_stronger_outcome_is_never_replaced_by_a_weaker_one(make_server):
    campaign = sent_campaign(1, 1, make_server)
    delivery = delivery_to(campaign, "reader0@example.test")

    record(SOFT, Bounce.Source.LISTENER, "reader0@example.test", reference=f"d{delivery.pk}")
    assert Delivery.objects.get(pk=delivery.pk).outcome == "soft"
    record(HARD, Bounce.Source.LISTENER, "reader0@example.test", reference=f"d{delivery.pk}")
    record(SOFT, Bounce.Source.LISTENER, "reader0@example.test", reference=f"d{delivery.pk}")
    assert Delivery.objects.get(pk=delivery.pk).outcome == "bounced"
    complain(delivery)
    record(HARD, Bounce.Source.LISTENER, "reader0@example.test", reference=f"d{delivery.pk}")

    campaign.refresh_from_db()
    assert Delivery.objects.get(pk=delivery.pk).outcome == "complained"
    assert (campaign.hard_bounces, campaign.complaints) == (1, 1)


def test_without_a_reference_only_the_subscriber_changes(make_server):
    campaign = sent_campaign(2, 2, make_server)
    Subscriber.objects.filter(email="reader1@example.test").update(status="unsubscribed")

    record(HARD, Bounce.Source.MAILBOX, "Reader0@Example.test")
    record(COMPLAINT, Bounce.Source.MAILBOX, "reader1@example.test")
    record(HARD, Bounce.Source.MAILBOX, "stranger@example.test")

    assert subscriber_status("reader0@example.test") == "bounced"
    assert subscriber_status("reader1@example.test") == "unsubscribed"  # who left keeps saying so
    assert set(campaign.deliveries.values_list("outcome", flat=True)) == {""}
    campaign.refresh_from_db()
    assert (campaign.hard_bounces, campaign.complaints) == (0, 0)


# -- guard rails --


def test_a_campaign_pauses_once_its_complaint_rate_passes_the_limit(make_server):
    campaign = sent_campaign(1000, 1000, make_server)  # 0.3% and 1,000 by default
    deliveries = list(campaign.deliveries.select_related("subscriber").order_by("pk")[:4])

    for delivery in deliveries[:3]:
        complain(delivery)
    assert status_of(campaign) == "running"  # 0.3% is not above 0.3%
    complain(deliveries[3])
    eventlog.flush()

    campaign.refresh_from_db()
    reason = "Paused: the complaint rate reached 0.40% (4 of 1,000 sent), above the 0.3% limit"
    assert (campaign.status, campaign.pause_reason) == ("paused", reason)
    assert list(Event.objects.filter(kind=eventlog.AUTO_PAUSE).values_list("campaign", "text")) == [
        (campaign.pk, reason)
    ]
    assert Event.objects.filter(kind="complaint", campaign=campaign).count() == 4


def test_the_messages_sent_are_counted_only_when_a_counter_could_pass_its_limit(make_server):
    """1,000 sent, 0.3% over a sample of 100: the first complaint could pass 0.3% of 100, so
    the messages are counted; the next two cannot pass 0.3% of the 1,000 known; the fourth can."""
    campaign = sent_campaign(1000, 1000, make_server, guard_min_sample=100)
    counts = []
    for delivery in campaign.deliveries.select_related("subscriber").order_by("pk")[:4]:
        with CaptureQueriesContext(connection) as queries:
            complain(delivery)
        counts.append(sum("COUNT(" in q["sql"] and "campaigns_delivery" in q["sql"] for q in queries))

    assert counts == [1, 0, 0, 1]
    assert status_of(campaign) == "paused"


def test_hard_bounces_refused_at_send_time_count_among_the_messages_sent(make_server):
    campaign = sent_campaign(20, 18, make_server, guard_min_sample=20, max_hard_bounce_rate=5)
    for delivery in campaign.deliveries.filter(status="pending").select_related("subscriber"):
        Delivery.objects.filter(pk=delivery.pk).update(status="failed")
        record(HARD, Bounce.Source.SEND, delivery.subscriber.email, reference=f"d{delivery.pk}")

    campaign.refresh_from_db()
    assert campaign.pause_reason == "Paused: the hard-bounce rate reached 10.00% (2 of 20 sent), above the 5% limit"


def test_below_the_minimum_sample_or_without_a_limit_nothing_pauses(make_server):
    small = sent_campaign(5, 5, make_server, guard_min_sample=10)
    unlimited = sent_campaign(20, 20, make_server, guard_min_sample=10, max_complaint_rate=0)

    for campaign in (small, unlimited):
        for delivery in campaign.deliveries.select_related("subscriber")[:4]:
            complain(delivery)

    assert (status_of(small), status_of(unlimited)) == ("running", "running")
    assert Campaign.objects.get(pk=small.pk).complaints == 4


def test_concurrent_reports_count_exactly_and_pause_once(make_server):
    """Eight threads report complaints about 200 deliveries, each delivery twice from two
    threads: each counts once, and the 11th (above 5% of 200) pauses the campaign, once."""
    campaign = sent_campaign(200, 200, make_server, guard_min_sample=100, max_complaint_rate=5)
    deliveries = list(campaign.deliveries.select_related("subscriber").order_by("pk"))
    start = threading.Barrier(8)

    def report(share: list[Delivery]) -> None:
        start.wait()
        try:
            for delivery in share:
                complain(delivery)
        finally:
            connection.close()

    shares = [deliveries[n * 50 : (n + 1) * 50] for n in range(4)] * 2
    threads = [threading.Thread(target=report, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    eventlog.flush()

    campaign.refresh_from_db()
    assert campaign.complaints == 200
    assert Bounce.objects.filter(kind=COMPLAINT).count() == 400
    assert set(campaign.deliveries.values_list("outcome", flat=True)) == {"complained"}
    reason = "Paused: the complaint rate reached 5.50% (11 of 200 sent), above the 5% limit"
    assert (campaign.status, campaign.pause_reason) == ("paused", reason)
    assert Event.objects.filter(kind=eventlog.AUTO_PAUSE, campaign=campaign).count() == 1


def test_a_running_campaign_stops_sending_when_complaints_pass_the_limit(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 20
    sandbox = smtp_sandbox(latency_ms=2)
    campaign = make_campaign(
        [make_server(port=sandbox.port, max_conns=2)], 600, guard_min_sample=40, max_complaint_rate=2
    )
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    sender = threading.Thread(target=lambda: (loop.send_campaign(campaign.pk), connection.close()))
    sender.start()
    wait_for(lambda: sent_count(campaign) >= 50, 60, "50 messages out")

    sent = campaign.deliveries.filter(status="sent").select_related("subscriber").order_by("pk")
    for delivery in sent[:30]:
        complain(delivery)
        if status_of(campaign) == "paused":
            break
    at_pause = len(sandbox.received)
    sender.join(timeout=30)
    time.sleep(0.5)

    campaign.refresh_from_db()
    assert campaign.status == "paused"
    numbers = re.fullmatch(
        r"Paused: the complaint rate reached (\d+\.\d\d)% \((\d+) of ([\d,]+) sent\), above the 2% limit",
        campaign.pause_reason,
    )
    assert numbers and int(numbers[2]) == campaign.complaints
    assert len(sandbox.received) <= at_pause + 2  # a message per connection past its final dot, at most
    assert not sender.is_alive() and not campaign.deliveries.filter(status="sending").exists()
    assert campaign.deliveries.filter(status="pending").exists()


def test_a_report_to_one_deliverys_verp_address_acts_on_its_subscriber_only(make_server):
    """A subscriber holds the VERP address of their own delivery: a report they send to it
    naming someone else is kept and moves nothing."""
    campaign = sent_campaign(2, 2, make_server)
    mine, theirs = campaign.deliveries.select_related("subscriber").order_by("pk")
    report = dsn.notification(
        b"Subject: hi\r\n\r\nhi\r\n", theirs.subscriber.email, to=verp.address(f"d{mine.pk}", DOMAIN)
    )

    [kept] = intake.read(report).record(Bounce.Source.MAILBOX)
    [acted] = intake.read(report.replace(theirs.subscriber.email.encode(), mine.subscriber.email.encode())).record(
        Bounce.Source.MAILBOX
    )

    assert (kept.email, kept.reference, kept.acted_on) == (theirs.subscriber.email, f"d{mine.pk}", False)
    assert (acted.email, acted.reference, acted.acted_on) == (mine.subscriber.email, f"d{mine.pk}", True)
    assert list(Suppression.objects.values_list("email", flat=True)) == [mine.subscriber.email]
    outcomes = campaign.deliveries.order_by("pk").values_list("outcome", "subscriber__status")
    assert list(outcomes) == [("bounced", "bounced"), ("", "active")]
    assert Campaign.objects.get(pk=campaign.pk).hard_bounces == 1


# -- the campaign page --


def test_the_progress_block_shows_hard_bounces_and_complaints_with_their_rates(viewer_client, make_server):
    campaign = sent_campaign(400, 400, make_server)
    Campaign.objects.filter(pk=campaign.pk).update(hard_bounces=6, complaints=1)

    html = viewer_client.get(reverse("campaigns:progress", args=[campaign.pk])).content.decode()

    assert re.search(r"<dt>Hard bounces</dt><dd [^>]*>6 <small>\(1\.50%\)</small>", html)
    assert re.search(r"<dt>Complaints</dt><dd [^>]*>1 <small>\(0\.25%\)</small>", html)
    assert "The campaign pauses above 0.3% of the messages sent" in html


# -- end to end --


def test_recipients_whose_mail_bounces_later_are_suppressed_and_the_next_campaign_skips_them(
    smtp_relay, smtp_sandbox, make_server
):
    """The sandbox accepts everything, then sends a DSN for reader10 to reader19 to the envelope
    sender: a VERP address of the server's bounce domain, which the relay's listener takes."""
    listener = smtp_relay(trusted_networks=[])
    sandbox = smtp_sandbox(bounce="reader1?@example.test", bounce_to=("127.0.0.1", listener.port))
    server = make_server(port=sandbox.port, bounce_domain=DOMAIN)
    first = make_campaign([server], 20)
    bouncing = {f"reader{n}@example.test" for n in range(10, 20)}

    start_sending(first)
    wait_for(lambda: Bounce.objects.count() == 10, 30, "the DSNs of the ten recipients")

    assert len(sandbox.received) == 20  # everything was accepted, then ten bounced
    assert set(Suppression.objects.values_list("email", flat=True)) == bouncing
    assert set(Suppression.objects.values_list("reason", flat=True)) == {"hard_bounce"}
    for bounce in Bounce.objects.all():
        assert (bounce.kind, bounce.source, bounce.status) == (HARD, "listener", "5.1.1")
        assert bounce.reference == f"d{delivery_to(first, bounce.email).pk}"  # its own delivery, by VERP
    assert set(first.deliveries.filter(outcome="bounced").values_list("subscriber__email", flat=True)) == bouncing
    assert Campaign.objects.get(pk=first.pk).hard_bounces == 10

    second = make_campaign([server], 20)
    start_sending(second)

    assert set(second.deliveries.filter(status="skipped").values_list("subscriber__email", flat=True)) == bouncing
    assert second.deliveries.filter(status="sent").count() == 10
    later = [message.rcpt_tos[0] for message in sandbox.received[20:]]
    assert sorted(later) == sorted({f"reader{n}@example.test" for n in range(10)})
