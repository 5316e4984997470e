"""Hostile SMTP servers (tests/hostile.py) against "test connection" and the backend. Every
reply is bounded in time, size and syntax; nothing a server says crashes anything, counts as
sent when it is not, or carries the credentials any further."""

import base64
import itertools
import time
import tracemalloc

import pytest
from django.core.mail import EmailMessage, get_connection
from django.urls import reverse

from smtp_settings.events import Kind
from smtp_settings.probe import probe
from tests.hostile import PIPELINING_EHLO, endless
from tests.smtp_settings.test_probe import _server

pytestmark = pytest.mark.django_db(transaction=True)  # sending threads use connections of their own

BACKEND = "smtp_settings.backends.RotatingEmailBackend"
MB = 1024 * 1024
ENDLESS_GREETING = endless("220-" + "A" * 1000)  # runs past the bytes bound first
ENDLESS_REPLY = endless("250-" + "A" * 70)  # runs past the lines bound first


def _traced(action):
    """`action()`'s result, and the most memory Python held at once while it ran."""
    tracemalloc.start()
    try:
        return action(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _send(server, count: int = 1, **options) -> list[EmailMessage]:
    messages = [
        EmailMessage(f"Hello {n}", "A campaign message.\n", "news@example.test", [f"r{n}@example.test"])
        for n in range(count)
    ]
    backend = get_connection(BACKEND, server=server, retries=0, retry_backoff_s=0.01, fail_silently=True, **options)
    backend.send_messages(messages)
    return messages


# -- a reply without end --


def test_an_endless_greeting_fails_test_connection_in_bounded_memory(hostile_smtp):
    hostile = hostile_smtp(banner=ENDLESS_GREETING)

    result, peak = _traced(lambda: probe(_server(port=hostile.port)))

    assert result.error == "The server broke the SMTP protocol at the connect step: the server's reply exceeded 64 KiB."
    assert peak < 10 * MB


def test_an_endless_reply_to_mail_fails_test_connection_at_that_step(hostile_smtp):
    hostile = hostile_smtp(replies={"MAIL": ENDLESS_REPLY})

    result, peak = _traced(lambda: probe(_server(port=hostile.port), to_email="me@example.test"))

    assert [(step.name, step.ok) for step in result.steps] == [("connect", True), ("EHLO", True), ("MAIL FROM", False)]
    assert result.error == (
        "The server broke the SMTP protocol at the MAIL FROM step: the server's reply ran past 100 lines."
    )
    assert not result.sent and peak < 10 * MB


@pytest.mark.parametrize("ehlo", ["250 hostile.test", PIPELINING_EHLO], ids=["plain", "pipelining"])
def test_the_backend_defers_a_message_whose_mail_reply_never_ends(hostile_smtp, make_server, pool_events, ehlo):
    hostile = hostile_smtp(replies={"EHLO": ehlo, "MAIL": ENDLESS_REPLY})
    server = make_server(port=hostile.port)

    [message], peak = _traced(lambda: _send(server))

    assert peak < 10 * MB
    result = message.smtp_result
    assert (result.status, result.code, result.ambiguous) == ("deferred", None, False)
    assert result.text == "bad reply at MAIL, connection closed: the server's reply ran past 100 lines"
    assert [event.kind for event in pool_events if event.kind == Kind.PROTOCOL_ERROR] == [Kind.PROTOCOL_ERROR]
    assert hostile.messages == 0


def test_the_backend_defers_when_the_greeting_never_ends(hostile_smtp, make_server, pool_events):
    hostile = hostile_smtp(banner=ENDLESS_GREETING)

    [message] = _send(make_server(port=hostile.port))

    assert message.smtp_result.status == "deferred"
    assert message.smtp_result.text == "the server's reply exceeded 64 KiB"
    [failed] = [event for event in pool_events if event.kind == Kind.CONNECT_FAILED]
    assert (failed.stage, failed.code) == ("connect", None)


def test_an_endless_line_is_cut_off_at_the_bytes_bound(hostile_smtp):
    hostile = hostile_smtp(banner=lambda: itertools.repeat(b"220 " + b"A" * 4096))

    result, peak = _traced(lambda: probe(_server(port=hostile.port)))

    assert result.error.endswith("the server's reply exceeded 64 KiB.")
    assert peak < 10 * MB


def test_a_reply_of_too_many_lines_is_refused_even_when_small(hostile_smtp):
    hostile = hostile_smtp(replies={"EHLO": "\r\n".join(["250-X"] * 100 + ["250 X"])})
    result = probe(_server(port=hostile.port))
    assert result.error.endswith("the server's reply ran past 100 lines.")


def test_a_long_but_legitimate_ehlo_reply_is_read(hostile_smtp):
    features = [f"250-X-FEATURE-{n} " + "x" * 400 for n in range(60)]
    hostile = hostile_smtp(replies={"EHLO": "\r\n".join(["250-hostile.test", *features, "250 PIPELINING"])})
    result = probe(_server(port=hostile.port), to_email="me@example.test")
    assert result.ok, result.error
    assert hostile.messages == 1


# -- one byte a second --


def test_a_server_sending_a_byte_a_second_fails_test_connection_within_send_timeout(hostile_smtp):
    hostile = hostile_smtp(byte_delay_s=1)

    started = time.monotonic()
    result = probe(_server(port=hostile.port, send_timeout=2))

    assert time.monotonic() - started < 3
    assert result.error == "Timed out after 2 s waiting for the server at the connect step."


def test_test_connection_keeps_one_deadline_for_the_whole_exchange(hostile_smtp):
    """Each reply arrives in time, but together they outlast send_timeout."""
    hostile = hostile_smtp(replies={"EHLO": "250 hostile.test", "MAIL": "250 Ok"}, byte_delay_s=0.1)

    started = time.monotonic()
    result = probe(_server(port=hostile.port, send_timeout=3), to_email="me@example.test")

    assert time.monotonic() - started < 4
    assert result.error.startswith("Timed out after 3 s waiting for the server")
    assert not result.sent


def test_the_backend_defers_within_send_timeout_when_mail_replies_a_byte_a_second(
    hostile_smtp, make_server, pool_events
):
    hostile = hostile_smtp(byte_delay_s=1, slow={"MAIL"})
    server = make_server(port=hostile.port, send_timeout=2)

    started = time.monotonic()
    messages = _send(server, count=3)

    assert time.monotonic() - started < 3 * 2 + 1  # at worst one send_timeout per message
    assert {(m.smtp_result.status, m.smtp_result.text) for m in messages} == {
        ("deferred", "connection lost at MAIL: no complete reply within 2 s")
    }
    assert sum(event.kind == Kind.TIMEOUT for event in pool_events) == 3


# -- replies no server may send --

ODD_REPLIES = [
    ("MAIL", "abc"),
    ("MAIL", "-45 negative"),
    ("MAIL", "999 out of range"),
    ("MAIL", "250-first line\r\n550 mixed codes"),
    ("MAIL", "250x no separator"),
    ("RCPT", "abc"),
    ("RCPT", "354 go ahead?"),
    ("DATA", "250 2.0.0 Ok"),
]
ODD_REPLIES_TO_THE_DOT = ["150 maybe later", "999 what", "354 more?"]


@pytest.mark.parametrize("ehlo", ["250 hostile.test", PIPELINING_EHLO], ids=["plain", "pipelining"])
@pytest.mark.parametrize(("stage", "reply"), ODD_REPLIES)
def test_an_odd_reply_defers_the_message_and_closes_the_connection(
    hostile_smtp, make_server, pool_events, stage, reply, ehlo
):
    hostile = hostile_smtp(replies={"EHLO": ehlo, stage: reply})

    messages = _send(make_server(port=hostile.port, max_conns=1), count=2)

    for message in messages:
        result = message.smtp_result
        assert (result.status, result.code, result.ambiguous) == ("deferred", None, False)
        assert result.text.startswith(f"bad reply at {stage}, connection closed: ")
        assert {r.code for r in result.recipients.values()} == {None}
    assert hostile.connections == 2  # never reused after the bad reply
    assert all(event.code is None or 200 <= event.code <= 599 for event in pool_events)


@pytest.mark.parametrize("reply", ODD_REPLIES_TO_THE_DOT)
def test_an_odd_reply_to_the_final_dot_counts_as_maybe_delivered_never_sent_again(hostile_smtp, make_server, reply):
    """The whole message went out: the server may hold it, whatever it answered. Sending it
    again risks a duplicate, so it is counted sent and flagged ambiguous (RFC 1047)."""
    hostile = hostile_smtp(replies={"dot": reply})

    messages = _send(make_server(port=hostile.port, max_conns=1), count=2)

    for message in messages:
        result = message.smtp_result
        assert (result.status, result.ambiguous, result.attempts) == ("sent", True, 1)
        assert result.text.startswith("bad reply at dot, connection closed: ")
    assert hostile.connections == 2  # never reused after the bad reply


@pytest.mark.parametrize(
    ("stage", "reply", "step"),
    [("banner", "abc", "connect"), ("EHLO", "-45", "EHLO"), ("MAIL", "999 x", "MAIL FROM"), ("dot", "150 ok", "DATA")],
)
def test_an_odd_reply_fails_test_connection_at_its_step(hostile_smtp, stage, reply, step):
    hostile = hostile_smtp(replies={stage: reply})

    result = probe(_server(port=hostile.port), to_email="me@example.test")

    assert result.error.startswith(f"The server broke the SMTP protocol at the {step} step: the server ")
    assert not result.sent
    assert all(s.code is None or 200 <= s.code <= 599 for s in result.steps)


# -- credentials echoed back --

USER, PASSWORD = "relay-user", "Tr0ub4dor-3x"
SECRET_FORMS = [
    USER,
    PASSWORD,
    base64.b64encode(USER.encode()).decode(),
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
]
# What a careless server says, with the credentials in every form AUTH sent them and inside
# other base64 text.
ECHO = (
    f"bad credentials for {USER}:{PASSWORD} (sent {' '.join(SECRET_FORMS[2:])},"
    f" {base64.b64encode(f'{USER}:{PASSWORD}'.encode()).decode()})"
)
AUTH_LOGIN_ECHO = ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", f"535 5.7.8 {ECHO}"]


def assert_no_secret(text: str) -> None:
    for form in SECRET_FORMS:
        assert form not in text
    assert "[redacted]" in text  # the reply itself was kept


@pytest.mark.parametrize(("protocol", "auth_reply"), [("login", AUTH_LOGIN_ECHO), ("plain", f"535 5.7.8 {ECHO}")])
def test_credentials_echoed_at_auth_are_not_shown_by_test_connection(
    admin_client, make_server, hostile_smtp, protocol, auth_reply
):
    hostile = hostile_smtp(replies={"AUTH": auth_reply})
    server = make_server(port=hostile.port, auth_protocol=protocol, username=USER, password=PASSWORD)

    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Authentication failed (535)" in content
    assert_no_secret(content)


def test_credentials_echoed_in_an_auth_challenge_left_unanswered_are_not_shown(admin_client, make_server, hostile_smtp):
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    hostile = hostile_smtp(replies={"AUTH": f"334 {plain} {ECHO}"})
    server = make_server(port=hostile.port, auth_protocol="plain", username=USER, password=PASSWORD)

    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]))

    assert response.status_code == 200
    assert_no_secret(response.content.decode())


def test_credentials_echoed_at_auth_are_not_in_the_backends_result_or_events(hostile_smtp, make_server, pool_events):
    hostile = hostile_smtp(replies={"AUTH": AUTH_LOGIN_ECHO})
    server = make_server(port=hostile.port, auth_protocol="login", username=USER, password=PASSWORD)

    [message] = _send(server)

    assert (message.smtp_result.status, message.smtp_result.code) == ("deferred", 535)
    assert_no_secret(message.smtp_result.text)
    [failed] = [event for event in pool_events if event.kind == Kind.CONNECT_FAILED]
    assert_no_secret(failed.text)


def test_credentials_echoed_in_a_recipients_reply_are_not_in_its_result(hostile_smtp, make_server, pool_events):
    hostile = hostile_smtp(replies={"RCPT": f"550 5.1.1 {ECHO}"})
    server = make_server(port=hostile.port, auth_protocol="plain", username=USER, password=PASSWORD)

    [message] = _send(server)

    result = message.smtp_result
    assert (result.status, result.code) == ("failed", 550)
    assert_no_secret(result.text)
    [recipient] = result.recipients.values()
    assert_no_secret(recipient.text)
    [failure] = [event for event in pool_events if event.kind == Kind.FAILURE]
    assert_no_secret(failure.text)
