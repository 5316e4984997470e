"""VERP in RotatingEmailBackend: through a server with a bounce domain, a message that names
itself (`bounce_reference`) goes out with an envelope sender of its own, which maps back to it;
the header From stays as written. What the sandbox received is what counts."""

from email import message_from_bytes, policy

import pytest
from django.core.mail import EmailMessage, get_connection

from smtp_settings.bounces import verp
from smtp_settings.raw import RawMessage

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "smtp_settings.backends.RotatingEmailBackend"
DOMAIN = "bounces.example.test"
DATA = b"From: Alerts <alerts@example.test>\r\nTo: ops@example.test\r\nSubject: Disk full\r\n\r\nFull.\r\n"


def message(n: int, reference: str = "") -> EmailMessage:
    email = EmailMessage(f"Hello {n}", "Hi.\n", "News <news@example.test>", [f"r{n}@example.test"])
    if reference:
        email.bounce_reference = reference
    return email


def send(server, *messages) -> None:
    get_connection(BACKEND, server=server, fail_silently=True).send_messages(list(messages))


def test_each_message_goes_out_with_its_own_bounce_address_and_its_from_unchanged(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)  # one connection: each next envelope rides behind a message
    server = make_server(port=sandbox.port, bounce_domain=DOMAIN, max_conns=1)

    send(server, *(message(n, f"d{n}") for n in range(1, 6)))

    assert len(sandbox.received) == 5
    for received in sandbox.received:
        n = received.rcpt_tos[0].removeprefix("r").removesuffix("@example.test")
        assert received.mail_from == verp.address(f"d{n}", DOMAIN)
        assert received.mail_from.startswith(f"bounces+d{n}-") and received.mail_from.endswith(f"@{DOMAIN}")
        assert verp.reference_of(received.mail_from) == f"d{n}"
        assert message_from_bytes(received.data, policy=policy.default)["From"] == "News <news@example.test>"


def test_without_a_bounce_domain_or_a_reference_the_envelope_sender_is_the_from_address(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    without_domain = make_server(name="plain", port=sandbox.port)
    with_domain = make_server(name="verp", port=sandbox.port, bounce_domain=DOMAIN)

    send(without_domain, message(1, "d1"))
    send(with_domain, message(2))

    assert [received.mail_from for received in sandbox.received] == ["news@example.test", "news@example.test"]


def test_the_bounce_address_is_the_servers_at_send_time(smtp_sandbox, make_server):
    """Servers rotate: the same message through two servers gets each one's domain, or none."""
    sandbox = smtp_sandbox()
    first = make_server(name="first", port=sandbox.port, bounce_domain="b1.example.test")
    second = make_server(name="second", port=sandbox.port, bounce_domain="b2.example.test")
    third = make_server(name="third", port=sandbox.port)
    email = message(7, "d7")

    for server in (first, second, third):
        send(server, email)

    assert [received.mail_from for received in sandbox.received] == [
        verp.address("d7", "b1.example.test"),
        verp.address("d7", "b2.example.test"),
        "news@example.test",
    ]


def test_a_raw_message_gets_its_bounce_address_but_the_null_sender_stays_null(smtp_sandbox, make_server):
    """A message sent with MAIL FROM:<> is itself a bounce or an auto-reply: nothing may bounce
    back to it (RFC 5321 §4.5.5)."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, bounce_domain=DOMAIN)

    send(
        server,
        RawMessage("alerts@example.test", ["ops@example.test"], DATA, bounce_reference="o45"),
        RawMessage("", ["ops@example.test"], DATA, bounce_reference="o46"),
    )

    assert [received.mail_from for received in sandbox.received] == [verp.address("o45", DOMAIN), "<>"]
    assert sandbox.received[0].data == DATA


def test_a_reference_that_is_not_one_is_refused_before_anything_is_sent(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, bounce_domain=DOMAIN)
    bad = message(1, "d1>\r\nRCPT TO:<victim@example.test")

    send(server, bad, message(2, "d2"))

    assert bad.smtp_result.status == "failed" and "not a bounce reference" in bad.smtp_result.text
    assert [received.rcpt_tos for received in sandbox.received] == [("r2@example.test",)]
