"""QueuedEmailBackend: Django's send_mail and friends put messages in the outbox, in the
caller's transaction, without touching SMTP; workers deliver them once it commits."""

import pytest
from django.core.mail import EmailMessage, get_connection, send_mass_mail
from django.db import transaction

from smtp_settings.models import OutboxMessage, OutboxSender
from smtp_settings.outbox import delivery
from smtp_settings.outbox.queue import Refused
from tests.campaigns.test_sending import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUED = "smtp_settings.backends.QueuedEmailBackend"


@pytest.fixture
def queued_backend(settings):
    settings.EMAIL_BACKEND = QUEUED


@transaction.atomic  # as a view under ATOMIC_REQUESTS runs
def notify_everyone(count: int) -> int:
    """What a chat server's "@all" does: one notification per member."""
    notifications = [
        ("New post in #general", f"Hello member {n}, someone posted.", "chat@example.test", [f"member{n}@example.test"])
        for n in range(count)
    ]
    return send_mass_mail(notifications)


def test_250_notifications_return_without_touching_smtp_and_a_worker_delivers_them(
    smtp_sandbox, make_server, queued_backend, workers
):
    sandbox = smtp_sandbox(pipelining=True)
    make_server(port=sandbox.port, max_conns=5)

    assert notify_everyone(250) == 250

    assert sandbox.summary()["sessions"] == 0
    assert OutboxMessage.objects.filter(status="queued", source="backend").count() == 250
    workers(Q_WORKERS="1")
    wait_for(lambda: len(sandbox.received) == 250, 60, "250 notifications delivered")
    assert sandbox.summary()["unique_message_ids"] == 250
    assert {message.rcpt_tos[0] for message in sandbox.received} == {f"member{n}@example.test" for n in range(250)}


def test_a_rolled_back_transaction_queues_and_sends_nothing(smtp_sandbox, make_server, queued_backend):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)

    with pytest.raises(RuntimeError), transaction.atomic():
        notify_everyone(3)
        raise RuntimeError("the post could not be saved")

    assert not OutboxMessage.objects.exists()
    assert not OutboxSender.objects.exists()  # no delivery was woken either
    delivery.deliver()
    assert sandbox.summary()["sessions"] == 0


def test_the_bytes_django_makes_go_out_unchanged_with_bcc_only_in_the_envelope(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    make_server(port=sandbox.port)
    message = EmailMessage("Hi", "Body\n", "Chat <chat@example.test>", ["a@example.test"], bcc=["hidden@example.test"])

    assert get_connection(QUEUED).send_messages([message]) == 1
    delivery.deliver()

    [queued] = OutboxMessage.objects.all()
    [received] = sandbox.received
    assert received.data == bytes(queued.data)
    assert received.mail_from == "chat@example.test"
    assert received.rcpt_tos == ("a@example.test", "hidden@example.test")
    assert b"hidden" not in received.data
    assert received.message_id == queued.message_id != ""


def test_a_server_and_a_priority_can_be_chosen(make_server):
    make_server(name="alpha")
    beta = make_server(name="beta")
    message = EmailMessage("Hi", "Body", "chat@example.test", ["a@example.test"])

    get_connection(QUEUED, server="beta", priority=5).send_messages([message])

    assert list(OutboxMessage.objects.values_list("route", "priority")) == [([beta.pk], 5)]


def test_a_message_the_outbox_refuses_queues_nothing_unless_failing_silently(make_server):
    make_server()
    good = EmailMessage("Hi", "Body", "chat@example.test", ["a@example.test"])
    smuggling = EmailMessage("Hi", "Body", "chat@example.test", ["b@example.test\r\nRCPT TO:<c@example.test>"])

    with pytest.raises(ValueError):
        get_connection(QUEUED).send_messages([good, smuggling])
    assert not OutboxMessage.objects.exists()

    assert get_connection(QUEUED, fail_silently=True).send_messages([good, smuggling]) == 1
    assert list(OutboxMessage.objects.values_list("recipients", flat=True)) == [["a@example.test"]]


def test_too_many_recipients_are_refused_with_the_field(settings, make_server):
    settings.RELAY_MAX_RECIPIENTS = 2
    message = EmailMessage("Hi", "Body", "chat@example.test", ["a@example.test", "b@example.test", "c@example.test"])

    with pytest.raises(Refused) as refused:
        get_connection(QUEUED).send_messages([message])

    assert refused.value.field == "to"
