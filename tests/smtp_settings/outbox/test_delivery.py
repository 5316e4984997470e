"""Delivering the outbox: every message once, in priority order, through its route, with
retries, whatever happens to the worker. Asserts on what a real SMTP server received."""

import os
import signal
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django_q.brokers import get_broker

from campaigns import eventlog
from campaigns.models import Event
from smtp_settings.bounces.record import record, suppress
from smtp_settings.leases import AMBIGUOUS_SENT
from smtp_settings.models import Bounce, OutboxMessage, OutboxRecipientDone, OutboxSender, RelayRoute, Suppression
from smtp_settings.outbox import delivery
from smtp_settings.outbox.actions import requeue
from smtp_settings.outbox.queue import Envelope, enqueue
from smtp_settings.pool import close_all_pools
from tests.campaigns.test_sending import make_campaign, start_sending, status_of, wait_for

# Sending threads write from database connections of their own: the test's data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_lingering(monkeypatch):
    """A sender run in the test process ends as soon as nothing is ready (workers still linger)."""
    monkeypatch.setattr(delivery, "LINGER_S", 0)


def alert(n: int) -> bytes:
    return (
        f"From: Alerts <alerts@example.test>\r\nTo: user{n}@example.test\r\nSubject: Alert {n}\r\n"
        f"Message-ID: <alert-{n}@example.test>\r\n\r\nSomething happened ({n}).\r\n"
    ).encode()


def queue(count: int, start: int = 0, **envelope) -> list[OutboxMessage]:
    """`count` alerts in the outbox, one recipient each, as an application hands them over."""
    return enqueue(
        [
            Envelope("alerts@example.test", [f"user{n}@example.test"], alert(n), "relay", **envelope)
            for n in range(start, start + count)
        ]
    )


def received_ids(sandbox) -> Counter:
    return Counter(message.message_id for message in sandbox.received)


def statuses() -> Counter:
    return Counter(OutboxMessage.objects.values_list("status", flat=True))


def assert_each_received_once(sandbox, messages: list[OutboxMessage]) -> None:
    received = received_ids(sandbox)
    assert received == Counter(message.message_id for message in messages), "missing, doubled or stray messages"


def sender_pid() -> int:
    """The process of the live outbox sender (waiting out a hand-over between two tasks)."""

    def owner():
        live = OutboxSender.objects.filter(lease_until__gt=timezone.now()).exclude(owner="").order_by("-pk")
        return live.values_list("owner", flat=True).first()

    wait_for(owner, 30, "an outbox sender")
    return int(owner().rpartition(":")[2])


# -- exactly once --


def test_every_message_is_delivered_once_through_a_server_of_five_connections(smtp_sandbox, make_server, workers):
    sandbox = smtp_sandbox(latency_ms=2, pipelining=True, max_conns=5)
    make_server(port=sandbox.port, max_conns=5)
    messages = queue(300)

    workers(Q_WORKERS="2")
    wait_for(lambda: statuses()["sent"] == 300, 120, "every message sent")

    assert_each_received_once(sandbox, messages)
    summary = sandbox.summary()
    assert summary["refused_connections"] == 0 and summary["max_concurrent_sessions"] <= 5
    [seventh] = [message for message in sandbox.received if message.message_id == "<alert-7@example.test>"]
    assert seventh.data == alert(7)
    assert seventh.mail_from == "alerts@example.test" and seventh.rcpt_tos == ("user7@example.test",)
    assert not OutboxMessage.objects.filter(ambiguous=True).exists()


def test_killing_the_worker_mid_delivery_still_sends_each_message_once(smtp_sandbox, make_server, workers):
    """SIGKILL the worker that sends: the cluster starts a new one, which recovers its messages
    at once (the process is gone from this host) and sends the rest. A message whose final dot
    was out at the instant of the kill is flagged ambiguous, never sent twice."""
    sandbox = smtp_sandbox(latency_ms=10, pipelining=True)
    make_server(port=sandbox.port, max_conns=5)
    messages = queue(400)
    workers(Q_WORKERS="2")
    wait_for(lambda: len(sandbox.received) >= 100, 60, "100 messages out")

    os.kill(sender_pid(), signal.SIGKILL)
    killed_at = len(sandbox.received)
    wait_for(lambda: statuses()["sent"] == 400, 120, "every message sent")

    assert killed_at < 400
    received = received_ids(sandbox)
    assert max(received.values()) == 1, "a message was received twice"
    flagged = set(OutboxMessage.objects.filter(ambiguous=True).values_list("message_id", flat=True))
    assert {message.message_id for message in messages} - set(received) <= flagged
    assert len(flagged) <= 2 * 5  # per connection: the message in flight, and one awaiting its record


def test_a_sender_stopped_past_its_lease_completes_nothing_it_lost(smtp_sandbox, make_server, workers):
    """SIGSTOP the worker that sends, let its 2 s lease run out, let the watchdog hand the
    outbox to the other worker, then SIGCONT the first one while the second still sends. It
    wakes up mid-batch: every message it no longer holds is stopped at the fence."""
    sandbox = smtp_sandbox(latency_ms=10, pipelining=True)
    make_server(port=sandbox.port, max_conns=2, send_timeout=60)  # its sessions outlive the stop
    messages = queue(300)
    workers(Q_WORKERS="2", OUTBOX_LEASE_S="2", SMTP_SLOT_LEASE_S="3")
    wait_for(lambda: len(sandbox.received) >= 20, 60, "20 messages out")

    stopped = sender_pid()
    os.kill(stopped, signal.SIGSTOP)
    try:
        stopped_at = len(sandbox.received)
        time.sleep(4)  # past the 2 s lease, with room for a renewal just before the stop
        delivery.watchdog()  # fences it off and asks for a sender; the other worker takes it
        wait_for(lambda: len(sandbox.received) >= stopped_at + 20, 60, "the second worker to send")
        assert sender_pid() != stopped
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_for(lambda: statuses()["sent"] == 300, 120, "every message sent")
    time.sleep(1)  # whatever the continued worker still tries, it tries now

    received = received_ids(sandbox)
    assert max(received.values()) == 1, "a message was received twice"
    flagged = set(OutboxMessage.objects.filter(ambiguous=True).values_list("message_id", flat=True))
    assert {message.message_id for message in messages} - set(received) <= flagged
    assert len(flagged) <= 2 * 2
    assert statuses() == {"sent": 300}


def test_a_sender_whose_lease_ran_out_cannot_finish_a_message(smtp_sandbox, make_server):
    """It stalled with a claim in hand and nobody took over yet: the fence refuses every dot,
    and the messages go back in line untried."""
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    messages = queue(4)
    lease = delivery.join()
    claimed = [pk for pk, _, _ in delivery.claim(lease, 10)]
    assert len(claimed) == 4

    OutboxSender.objects.filter(pk=lease.token).update(lease_until=timezone.now() - timedelta(seconds=1))
    delivery.OutboxDelivery(lease, delivery.Keeper(lease)).send(delivery.Router(), claimed)

    assert sandbox.received == []
    assert set(OutboxMessage.objects.values_list("status", "attempts")) == {("queued", 0)}
    delivery.deliver()
    assert_each_received_once(sandbox, messages)


def test_the_watchdog_settles_a_dead_senders_messages_by_their_final_dot(smtp_sandbox, make_server):
    """Of a dead sender's five messages, two had their final dot recorded: the server may hold
    them, so they count as sent (ambiguous, in the log); the other three go out again."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    messages = queue(5)
    lease = delivery.join()
    delivery.claim(lease, 5)
    past_dot = [messages[0].pk, messages[1].pk]
    OutboxMessage.objects.filter(pk__in=past_dot).update(final_dot_at=timezone.now(), server=server)
    OutboxSender.objects.filter(pk=lease.token).update(lease_until=timezone.now() - timedelta(seconds=1))

    delivery.watchdog()

    assert list(
        OutboxMessage.objects.filter(ambiguous=True).order_by("pk").values_list("pk", "status", "last_reply")
    ) == [(pk, "sent", AMBIGUOUS_SENT) for pk in past_dot]
    assert statuses() == {"sent": 2, "queued": 3}
    eventlog.flush()
    assert sorted(Event.objects.filter(kind="ambiguous").values_list("outbox_message_id", "server_id")) == [
        (pk, server.pk) for pk in past_dot
    ]
    delivery.deliver()
    assert sorted(received_ids(sandbox)) == sorted(message.message_id for message in messages[2:])


# -- before campaigns --


def test_transactional_mail_goes_before_a_running_campaign_which_keeps_sending(smtp_sandbox, make_server, workers):
    """A campaign at 20 msg/s holds both connections of its server when 20 alerts arrive: they
    are all received within a few seconds, long before the campaign ends, and the campaign
    keeps a connection and carries on meanwhile."""
    sandbox = smtp_sandbox(pipelining=True)
    server = make_server(port=sandbox.port, max_conns=2)
    campaign = make_campaign([server], 300, rate_limit=20)  # 15 s
    campaign.launch()
    workers(Q_WORKERS="3")
    wait_for(lambda: len(sandbox.received) >= 40, 60, "the campaign to be under way")

    arrived = time.monotonic()
    alerts = {message.message_id for message in queue(20)}
    wait_for(lambda: alerts <= set(received_ids(sandbox)), 30, "the alerts to be delivered")
    delivered_s = time.monotonic() - arrived
    time.sleep(max(0.0, 2 - delivered_s))

    assert delivered_s < 5
    assert status_of(campaign) == "running"
    from_campaign = [m.received_at for m in sandbox.received if m.message_id not in alerts and m.received_at > arrived]
    assert len(from_campaign) >= 10  # in the two seconds after the alerts came: it was never stopped
    wait_for(lambda: status_of(campaign) == "finished", 60, "the campaign to finish")
    assert_everyone_received_once_with(sandbox, campaign, alerts)


def test_a_campaign_batch_through_a_server_the_outbox_waits_for_keeps_one_connection(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(latency_ms=5)
    server = make_server(port=sandbox.port, max_conns=3)
    alone, beside_the_outbox = make_campaign([server], 30), make_campaign([server], 30)

    start_sending(alone)
    most_alone = sandbox.summary()["max_concurrent_sessions"]
    close_all_pools()
    queue(1)  # waiting: no worker runs here
    sandbox.max_active = 0
    start_sending(beside_the_outbox)

    assert most_alone == 3
    assert sandbox.summary()["max_concurrent_sessions"] == 1
    assert status_of(beside_the_outbox) == "finished"


def assert_everyone_received_once_with(sandbox, campaign, alerts: set[str]) -> None:
    received = received_ids(sandbox)
    assert max(received.values()) == 1
    assert len(received) == 300 + len(alerts) and alerts <= set(received)
    assert statuses() == {"sent": len(alerts)}
    assert set(campaign.deliveries.values_list("status", flat=True)) == {"sent"}


# -- outcomes --


def test_a_temporary_failure_comes_back_after_a_doubling_wait_and_fails_after_the_retries(
    smtp_sandbox, make_server, settings
):
    settings.OUTBOX_RETRIES = 2
    settings.OUTBOX_RETRY_DELAY_S = 60
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    make_server(port=sandbox.port)
    [message] = queue(1)

    waits = []
    for attempt in (1, 2):
        delivery.deliver()
        message.refresh_from_db()
        assert (message.status, message.attempts, message.last_code) == ("deferred", attempt, 451)
        waits.append(round((message.next_attempt_at - message.updated_at).total_seconds()))
        delivery.deliver()  # not due yet: nothing happens
        assert OutboxMessage.objects.get(pk=message.pk).attempts == attempt
        OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=F("updated_at"))  # time passes
    delivery.deliver()

    message.refresh_from_db()
    assert waits == [60, 120]
    assert (message.status, message.attempts, message.last_code) == ("failed", 3, 451)
    assert "Temporary failure" in message.last_reply
    assert sandbox.summary()["tempfailed"] == 3 and sandbox.received == []


def test_a_rejected_message_fails_at_once_and_the_others_go(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(reject=r"^user0@")
    server = make_server(port=sandbox.port)
    rejected, accepted = queue(2)

    delivery.deliver()

    rejected.refresh_from_db()
    accepted.refresh_from_db()
    assert (rejected.status, rejected.attempts, rejected.last_code, rejected.server) == ("failed", 1, 550, server)
    assert "Recipient address rejected" in rejected.last_reply
    assert (accepted.status, accepted.last_code, accepted.server) == ("sent", 250, server)
    assert accepted.sent_at is not None
    assert received_ids(sandbox) == Counter([accepted.message_id])


def three_recipients() -> OutboxMessage:
    [message] = enqueue(
        [Envelope("alerts@example.test", ["a@example.test", "b@example.test", "c@example.test"], alert(1), "api")]
    )
    return message


def come_back(message: OutboxMessage) -> None:
    """Its wait is over (time passes)."""
    OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=F("updated_at"))


def envelopes(sandbox) -> list[tuple[str, ...]]:
    return [received.rcpt_tos for received in sandbox.received]


def test_a_message_deferred_for_one_recipient_goes_again_to_that_one_only(smtp_sandbox, make_server, settings):
    """RCPT b@ gets a 450 the first time: a@ and c@ have the message, which is deferred; the
    retry goes to b@ alone (RFC 5321), with the same bytes, and the message is sent."""
    settings.OUTBOX_RETRY_DELAY_S = 60
    sandbox = smtp_sandbox(reject=r"^b@", reject_reply="450 4.2.1 <{address}>: Mailbox busy, try again later")
    make_server(port=sandbox.port)
    message = three_recipients()

    delivery.deliver()
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("deferred", 1)
    assert envelopes(sandbox) == [("a@example.test", "c@example.test")]

    sandbox.reject = None  # the mailbox is free now
    come_back(message)
    delivery.deliver()

    assert envelopes(sandbox) == [("a@example.test", "c@example.test"), ("b@example.test",)]
    assert [received.data for received in sandbox.received] == [alert(1), alert(1)]
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("sent", 2)
    assert message.recipients == ["a@example.test", "b@example.test", "c@example.test"]  # as it was handed over


def test_a_recipient_refused_for_good_is_not_tried_again_with_the_deferred_one(smtp_sandbox, make_server, settings):
    """The first transaction's RCPT b@ gets a 450, c@ a 550 (a hard bounce, recorded at once,
    not again): the retry goes to b@ alone."""
    settings.OUTBOX_RETRY_DELAY_S = 60
    rcpts = Counter()

    def first_time(stage, sandbox):
        rcpts[stage] += 1
        replies = {2: "450 4.2.1 Mailbox busy", 3: "550 5.1.1 Recipient address rejected"}
        return replies.get(rcpts[stage]) if stage == "RCPT" else None

    sandbox = smtp_sandbox(reject=r"^[bc]@", fault=first_time)
    make_server(port=sandbox.port)
    message = three_recipients()

    delivery.deliver()
    assert OutboxMessage.objects.values_list("status", flat=True).get(pk=message.pk) == "deferred"
    assert list(Bounce.objects.values_list("email", "kind", "reference")) == [
        ("c@example.test", "hard", f"o{message.pk}")
    ]
    sandbox.reject = None  # c@ would be taken now: it must not be asked again
    come_back(message)
    delivery.deliver()

    assert envelopes(sandbox) == [("a@example.test",), ("b@example.test",)]
    assert OutboxMessage.objects.values_list("status", "attempts").get(pk=message.pk) == ("sent", 2)
    assert Bounce.objects.count() == 1


def test_a_sender_fenced_off_before_its_outcome_is_written_remembers_no_recipient(smtp_sandbox, make_server, settings):
    """The sender loses its claim while the server answers the final dot (the watchdog takes
    the message back: "resend"): its outcome is not written, and neither are the recipients
    it reached, so the message goes again whole, as any message of a lost claim does."""
    settings.OUTBOX_RETRY_DELAY_S = 60
    settings.CAMPAIGN_AMBIGUOUS_POLICY = "resend"
    fenced = []

    def fence_off_at_the_dot(stage, sandbox):
        if stage == "dot" and not fenced:
            fenced.append(stage)
            thread = threading.Thread(target=take_back)  # the ORM refuses to run in the event loop
            thread.start()
            thread.join()

    def take_back():
        OutboxSender.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
        delivery.recover_orphans()
        connection.close()

    sandbox = smtp_sandbox(
        reject=r"^b@", reject_reply="450 4.2.1 <{address}>: Mailbox busy", fault=fence_off_at_the_dot
    )
    make_server(port=sandbox.port)
    message = three_recipients()

    delivery.deliver()

    assert envelopes(sandbox) == [("a@example.test", "c@example.test")]
    assert OutboxMessage.objects.values_list("status", "attempts", "ambiguous").get(pk=message.pk) == (
        "queued",
        0,
        True,
    )
    assert not OutboxRecipientDone.objects.exists()
    delivery.deliver()
    assert envelopes(sandbox) == [("a@example.test", "c@example.test")] * 2


def test_higher_priority_goes_first(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port, max_conns=1)
    queue(3)
    urgent = queue(2, start=3, priority=10)

    delivery.deliver()

    order = [message.message_id for message in sandbox.received]
    assert order[:2] == [message.message_id for message in urgent]
    assert len(order) == 5


def test_the_events_of_an_outbox_message_are_in_the_log_with_it(smtp_sandbox, make_server, viewer_client):
    sandbox = smtp_sandbox(reject=r"^user0@")
    make_server(port=sandbox.port)
    [message] = queue(1)

    delivery.deliver()
    eventlog.flush()

    failure = Event.objects.get(kind="failure")
    assert (failure.outbox_message_id, failure.code, failure.message_id) == (message.pk, 550, message.message_id)
    assert Event.objects.filter(kind="connect", outbox_message_id=message.pk).exists()
    page = viewer_client.get("/logs/").content.decode()
    assert f"outbox #{message.pk}" in page


# -- the suppression list --


def test_a_suppressed_recipient_is_left_out_of_the_envelope_and_the_others_get_the_message(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    suppress("gone@example.test", Suppression.Reason.HARD_BOUNCE)
    [message] = enqueue([Envelope("alerts@example.test", ["Gone@Example.test", "bob@example.test"], alert(1), "api")])

    delivery.deliver()
    eventlog.flush()

    [received] = sandbox.received
    assert received.rcpt_tos == ("bob@example.test",)
    assert received.data == alert(1)  # the bytes as the application made them, To header and all
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("sent", 1)
    assert message.recipients == ["Gone@Example.test", "bob@example.test"]  # as it was handed over
    event = Event.objects.get(kind="suppressed")
    assert (event.outbox_message_id, event.recipient) == (message.pk, "Gone@Example.test")
    assert event.text == "not sent to 1 recipient on the suppression list: Gone@Example.test"


def test_a_deferred_message_says_once_who_was_left_out(smtp_sandbox, make_server, settings):
    """Each claim of a deferred message leaves the suppressed recipients out again; the log
    says so once, not at every retry."""
    settings.OUTBOX_RETRIES = 2
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    make_server(port=sandbox.port)
    suppress("gone@example.test", Suppression.Reason.HARD_BOUNCE)
    [message] = enqueue([Envelope("alerts@example.test", ["gone@example.test", "bob@example.test"], alert(1), "api")])

    for _ in range(3):
        delivery.deliver()
        OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=F("updated_at"))  # time passes
    eventlog.flush()

    assert OutboxMessage.objects.values_list("status", "attempts").get(pk=message.pk) == ("failed", 3)
    assert sandbox.summary()["tempfailed"] == 3
    assert Event.objects.filter(kind="suppressed", outbox_message_id=message.pk).count() == 1


def test_an_address_that_unsubscribed_and_then_bounced_gets_no_transactional_mail(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    suppress("reader@example.test", Suppression.Reason.UNSUBSCRIBE)
    record(Bounce.Kind.HARD, Bounce.Source.LISTENER, "reader@example.test", status="5.1.1", text="user unknown")
    [message] = enqueue([Envelope("alerts@example.test", ["reader@example.test"], alert(1), "api")])

    delivery.deliver()

    assert OutboxMessage.objects.get(pk=message.pk).status == "skipped"
    assert sandbox.received == []


def test_a_refused_sender_suppresses_none_of_the_recipients(hostile_smtp, make_server):
    """Every recipient of the message carries the reply to MAIL FROM, which is about the sender."""
    server = hostile_smtp(replies={"MAIL": "550 5.1.0 <alerts@example.test>: Sender address rejected: User unknown"})
    make_server(port=server.port)
    [message] = enqueue([Envelope("alerts@example.test", ["ann@example.test", "bob@example.test"], alert(1), "api")])

    delivery.deliver()

    assert OutboxMessage.objects.values_list("status", "last_code").get(pk=message.pk) == ("failed", 550)
    assert not Bounce.objects.exists() and not Suppression.objects.exists()


def test_an_unsubscribe_does_not_stop_transactional_mail(smtp_sandbox, make_server):
    """Leaving a newsletter must not stop password resets and receipts."""
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    suppress("reader@example.test", Suppression.Reason.UNSUBSCRIBE)
    [message] = enqueue([Envelope("alerts@example.test", ["reader@example.test"], alert(1), "api")])

    delivery.deliver()

    message.refresh_from_db()
    assert message.status == "sent"
    assert [received.rcpt_tos for received in sandbox.received] == [("reader@example.test",)]


def test_a_message_whose_recipients_are_all_suppressed_is_skipped_and_nothing_is_sent(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    recipients = [f"user{n}@example.test" for n in range(8)]
    for address in recipients:
        suppress(address, Suppression.Reason.COMPLAINT)
    [skipped] = enqueue([Envelope("alerts@example.test", recipients, alert(0), "relay")])
    [other] = queue(1, start=9)

    delivery.deliver()

    skipped.refresh_from_db()
    assert (skipped.status, skipped.attempts, skipped.sent_at, skipped.server) == ("skipped", 0, None, None)
    assert skipped.last_reply == (
        "not sent: every recipient is on the suppression list (user0@example.test, user1@example.test,"
        " user2@example.test, user3@example.test, user4@example.test and 3 more)"
    )
    assert received_ids(sandbox) == Counter([other.message_id])
    assert [message.rcpt_tos for message in sandbox.received] == [("user9@example.test",)]


def test_a_skipped_message_requeued_once_its_address_is_off_the_list_goes(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    entry = suppress("user0@example.test", Suppression.Reason.MANUAL)
    [message] = queue(1)
    delivery.deliver()
    assert OutboxMessage.objects.get().status == "skipped" and sandbox.received == []

    entry.delete()
    assert requeue(OutboxMessage.objects.all()) == 1
    delivery.deliver()

    assert received_ids(sandbox) == Counter([message.message_id])
    assert OutboxMessage.objects.get().status == "sent"


# -- routes --


def test_a_message_goes_through_the_servers_of_its_route_only(smtp_sandbox, make_server):
    first, second = smtp_sandbox(), smtp_sandbox()
    make_server(name="alpha", port=first.port)
    beta = make_server(name="beta", port=second.port)
    messages = queue(4, route=[beta.pk])

    delivery.deliver()

    assert first.received == []
    assert_each_received_once(second, messages)


def test_without_a_route_mail_takes_the_default_route_or_else_the_first_enabled_server(smtp_sandbox, make_server):
    first, second = smtp_sandbox(), smtp_sandbox()
    beta = make_server(name="beta", port=second.port)
    make_server(name="alpha", port=first.port)
    [early] = queue(1)
    delivery.deliver()
    RelayRoute.get().servers.set([beta])
    [late] = queue(1, start=1)
    delivery.deliver()

    assert received_ids(first) == Counter([early.message_id])  # alpha: first by name
    assert received_ids(second) == Counter([late.message_id])  # beta: the default route


def test_a_message_with_no_enabled_server_to_go_through_waits_and_says_why(smtp_sandbox, make_server, settings):
    settings.OUTBOX_RETRY_DELAY_S = 60
    sandbox = smtp_sandbox()
    off = make_server(name="off", port=sandbox.port, enabled=False)
    make_server(name="on", port=sandbox.port)
    [message] = queue(1, route=[off.pk])  # never diverted to another server

    delivery.deliver()

    message.refresh_from_db()
    assert (message.status, message.attempts, message.last_reply) == ("deferred", 0, delivery.NO_SERVER)
    assert round((message.next_attempt_at - message.updated_at).total_seconds()) == 60
    assert sandbox.received == []


# -- waking --


def test_a_sender_is_asked_for_only_when_none_is_live_or_asked_for():
    queued = get_broker().queue_size()

    for _ in range(5):
        delivery.wake_senders()

    assert get_broker().queue_size() - queued == 1
    [asked] = OutboxSender.objects.all()
    assert asked.owner == "" and asked.lease_until > timezone.now()
    lease = delivery.join(asked.pk)
    assert lease is not None and delivery.join(asked.pk) is None  # a task delivered twice starts once
    delivery.release(lease, 0)
    delivery.wake_senders()
    assert get_broker().queue_size() - queued == 2
