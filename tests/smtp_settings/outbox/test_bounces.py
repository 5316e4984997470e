"""Bounces of outbox messages at send time, per recipient, and their VERP return path "o<id>".
Asserts on what a real SMTP server (the sandbox) received and on what was recorded."""

import pytest

from campaigns import eventlog
from campaigns.models import Event
from smtp_settings.bounces import verp
from smtp_settings.models import Bounce, OutboxMessage, Suppression
from smtp_settings.outbox import delivery
from smtp_settings.outbox.queue import Envelope, enqueue

pytestmark = pytest.mark.django_db(transaction=True)

DOMAIN = "bounces.example.test"
DATA = b"From: Alerts <alerts@example.test>\r\nSubject: Disk full\r\nMessage-ID: <disk@example.test>\r\n\r\nFull.\r\n"


@pytest.fixture(autouse=True)
def _no_lingering(monkeypatch):
    monkeypatch.setattr(delivery, "LINGER_S", 0)


def queue(*recipients: str) -> OutboxMessage:
    [message] = enqueue([Envelope("alerts@example.test", list(recipients), DATA, "relay")])
    return message


def test_a_recipient_refused_as_unknown_is_a_hard_bounce_and_the_others_get_the_message(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(reject=r"^gone@")
    server = make_server(port=sandbox.port)
    message = queue("ops@example.test", "gone@example.test", "dev@example.test")

    delivery.deliver()
    eventlog.flush()

    [received] = sandbox.received
    assert received.rcpt_tos == ("ops@example.test", "dev@example.test")
    assert OutboxMessage.objects.get(pk=message.pk).status == "sent"
    [bounce] = Bounce.objects.all()
    assert (bounce.kind, bounce.source, bounce.email, bounce.reference, bounce.server) == (
        "hard",
        "send",
        "gone@example.test",
        f"o{message.pk}",
        server,
    )
    assert (bounce.code, bounce.status) == (550, "5.1.1")
    assert list(Suppression.objects.values_list("email", "reason")) == [("gone@example.test", "hard_bounce")]
    logged = Event.objects.get(kind="bounce")
    assert (logged.outbox_message_id, logged.recipient, logged.enhanced_code) == (
        message.pk,
        "gone@example.test",
        "5.1.1",
    )


def test_recipients_whose_rcpt_deferrals_ran_out_are_soft_bounces(smtp_sandbox, make_server, settings):
    settings.OUTBOX_RETRIES = 0
    sandbox = smtp_sandbox(reject=".", reject_reply="450 4.2.1 <{address}>: Mailbox busy")
    make_server(port=sandbox.port)
    message = queue("ops@example.test", "dev@example.test")

    delivery.deliver()

    assert OutboxMessage.objects.get(pk=message.pk).status == "failed"
    assert sorted(Bounce.objects.values_list("kind", "email", "reference", "code")) == [
        ("soft", "dev@example.test", f"o{message.pk}", 450),
        ("soft", "ops@example.test", f"o{message.pk}", 450),
    ]


def test_a_message_whose_data_deferrals_ran_out_bounces_nobody(smtp_sandbox, make_server, settings):
    """451 after the final dot is about the message, not its recipients' addresses."""
    settings.OUTBOX_RETRIES = 0
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    make_server(port=sandbox.port)
    message = queue("ops@example.test", "dev@example.test")

    delivery.deliver()

    assert OutboxMessage.objects.values_list("status", "last_code").get(pk=message.pk) == ("failed", 451)
    assert not Bounce.objects.exists()


def test_a_message_deferred_with_retries_left_bounces_nothing_yet(smtp_sandbox, make_server, settings):
    settings.OUTBOX_RETRIES = 2
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    make_server(port=sandbox.port)
    message = queue("ops@example.test")

    delivery.deliver()

    assert OutboxMessage.objects.get(pk=message.pk).status == "deferred"
    assert not Bounce.objects.exists()


def test_a_policy_refusal_fails_the_message_without_a_bounce(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(reject=".", reject_reply="554 5.7.1 <{address}>: Relay access denied")
    make_server(port=sandbox.port)
    message = queue("ops@example.test")

    delivery.deliver()

    assert OutboxMessage.objects.get(pk=message.pk).status == "failed"
    assert not Bounce.objects.exists() and not Suppression.objects.exists()


def test_through_a_server_with_a_bounce_domain_the_return_path_names_the_message(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port, bounce_domain=DOMAIN)
    message = queue("ops@example.test")

    delivery.deliver()

    [received] = sandbox.received
    assert received.mail_from == verp.address(f"o{message.pk}", DOMAIN)
    assert verp.reference_of(received.mail_from) == f"o{message.pk}"
    assert received.data == DATA  # the header From as the application wrote it
