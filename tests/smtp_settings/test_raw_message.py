"""RotatingEmailBackend sending a RawMessage: the outbox's bytes and envelope go out as they
are, with only the server's custom headers the message lacks put in front."""

import pytest
from django.core.mail import get_connection

from smtp_settings.raw import RawMessage, header_names

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "smtp_settings.backends.RotatingEmailBackend"
DATA = (
    b"From: Alerts <alerts@example.test>\r\n"
    b"To: ops@example.test\r\n"
    b"Subject: Disk full\r\n"
    b"x-mailer: chat server 4.2\r\n"
    b"Message-ID: <disk-1@example.test>\r\n"
    b"\r\n"
    b"The disk is full.\r\n"
    b".A line that starts with a dot.\r\n"
)


def _send(server, *messages: RawMessage):
    get_connection(BACKEND, server=server, fail_silently=True).send_messages(list(messages))


def test_a_raw_message_goes_out_byte_for_byte_with_its_envelope(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    message = RawMessage("bounces@example.test", ["ops@example.test", "cc@example.test"], DATA, "<disk-1@example.test>")

    _send(make_server(port=sandbox.port), message)

    [received] = sandbox.received
    assert received.data == DATA
    assert received.mail_from == "bounces@example.test"
    assert received.rcpt_tos == ("ops@example.test", "cc@example.test")
    assert message.smtp_result.status == "sent"


def test_a_blank_sender_is_the_null_sender(smtp_sandbox, make_server):
    """Bounces and auto-replies go out with MAIL FROM:<> (RFC 5321 §4.5.5)."""
    sandbox = smtp_sandbox()

    _send(make_server(port=sandbox.port), RawMessage("", ["ops@example.test"], DATA))

    [received] = sandbox.received
    assert received.mail_from == "<>"
    assert received.data == DATA


def test_custom_headers_are_put_in_front_only_where_the_message_lacks_them(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    headers = [["X-Mailer", "Relaydeck"], ["X-Campaign-Tag", "ops"], ["X-Region", "café"]]
    server = make_server(port=sandbox.port, custom_headers=headers)

    _send(server, RawMessage("alerts@example.test", ["ops@example.test"], DATA))

    [received] = sandbox.received  # its own "x-mailer" stays, alone
    assert received.data == b"X-Campaign-Tag: ops\r\nX-Region: =?utf-8?b?Y2Fmw6k=?=\r\n" + DATA


def test_header_names_are_read_from_the_header_section_only():
    data = b"Subject: a\r\n folded: not a header\r\nX-One: 1\r\n\r\nX-Two: in the body\r\n"

    assert header_names(data) == {"subject", "x-one"}


def test_an_envelope_with_a_line_break_is_refused_before_anything_is_sent(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    smuggled = RawMessage("alerts@example.test", ["ops@example.test>\r\nRCPT TO:<all@example.test"], DATA)

    _send(make_server(port=sandbox.port), smuggled)

    assert smuggled.smtp_result.status == "failed"
    assert "control character" in smuggled.smtp_result.text
    assert sandbox.received == []
