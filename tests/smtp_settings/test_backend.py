"""RotatingEmailBackend and its pool, against the sandbox: what the server received, exactly."""

import os
import re
import threading
import time
from collections import Counter
from email import message_from_bytes

import pytest
from django.core.mail import EmailMessage, get_connection, make_msgid, send_mail
from django.db import connection

from smtp_settings.backends import DeliveryFailed, StopBatch
from smtp_settings.events import CONNECTION_ENDS, ConnectionIds, Kind, connection_ids, connection_label
from smtp_settings.pool import ConnectionPool, ServerConfig, get_pool
from smtp_settings.sandbox import EXCHANGE_421, SES_421
from smtp_settings.transaction import SessionClosed, prepare_data

# Sending threads take connection slots in the shared limits, each on a database connection of its own.
pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "smtp_settings.backends.RotatingEmailBackend"


def _messages(count: int, to=None) -> list[EmailMessage]:
    """Messages with a Message-ID each, given up front as a campaign gives them: what the
    server received can then be told apart, message by message."""
    return [
        EmailMessage(
            f"Hello {n}",
            "A campaign message.\n",
            "news@example.test",
            to or [f"r{n}@example.test"],
            headers={"Message-ID": make_msgid(domain="example.test")},
        )
        for n in range(count)
    ]


def _backend(server, **options):
    return get_connection(BACKEND, server=server, retry_backoff_s=0.01, **options)


def _id(message: EmailMessage) -> str:
    return message.extra_headers["Message-ID"]


def _assert_received_once(sandbox, messages):
    """The server received each of `messages` exactly once, and nothing else."""
    received = Counter(message.message_id for message in sandbox.received)
    sent = Counter(_id(message) for message in messages)
    assert received == sent, f"missing: {sorted(sent - received)}; extra or twice: {sorted(received - sent)}"


def test_the_received_once_check_notices_a_missing_a_doubled_and_a_stray_message(smtp_sandbox, make_server):
    """The check the tests below rely on can fail, and does when it should."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    first, second, never_sent = _messages(3)
    _backend(server).send_messages([first, second])

    _assert_received_once(sandbox, [first, second])
    with pytest.raises(AssertionError, match=re.escape(f"missing: ['{_id(never_sent)}']; extra or twice: []")):
        _assert_received_once(sandbox, [first, second, never_sent])
    with pytest.raises(AssertionError, match=re.escape(f"missing: []; extra or twice: ['{_id(second)}']")):
        _assert_received_once(sandbox, [first])
    _backend(server).send_messages([first])
    with pytest.raises(AssertionError, match=re.escape(f"missing: []; extra or twice: ['{_id(first)}']")):
        _assert_received_once(sandbox, [first, second])


def _kinds(events) -> Counter:
    return Counter(event.kind for event in events)


def _once(stage: str, action: str):
    """A sandbox fault that does `action` the first time `stage` comes round, then nothing."""
    actions = iter([action])
    return lambda at, _sandbox: next(actions, None) if at == stage else None


def test_learns_the_session_cap_and_delivers_each_message_exactly_once(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(max_msgs_per_session=50)
    server = make_server(port=sandbox.port, max_msgs_per_conn=0)
    messages = _messages(1000)

    assert _backend(server).send_messages(messages) == 1000

    assert {m.smtp_result.status for m in messages} == {"sent"}
    received = Counter(m.message_id for m in sandbox.received)
    assert len(received) == 1000 and set(received.values()) == {1}
    server.refresh_from_db()
    assert server.learned_msgs_per_conn == 45 and server.learned_msgs_per_conn_at
    learned_at = next(i for i, e in enumerate(pool_events) if e.kind == Kind.LEARNED_LIMIT)
    opened_before = {e.connection_id for e in pool_events[:learned_at] if e.kind == Kind.CONNECT}
    late_421s = [e for e in pool_events[learned_at:] if e.kind == "421" and e.connection_id not in opened_before]
    assert late_421s == [], "a connection opened after learning hit the server's cap"
    assert all(e.text == SES_421[4:] for e in pool_events if e.kind == "421")


def test_rotates_before_the_server_cap(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(max_msgs_per_session=50)
    server = make_server(port=sandbox.port, max_msgs_per_conn=40, max_conns=1)
    messages = _messages(1000)

    assert _backend(server).send_messages(messages) == 1000

    kinds = _kinds(pool_events)
    assert kinds["421"] == 0 and sandbox.summary()["replied_421"] == 0
    assert kinds[Kind.ROTATION] == 25
    assert all(e.messages_on_connection == 40 for e in pool_events if e.kind == Kind.ROTATION)
    _assert_received_once(sandbox, messages)


@pytest.mark.django_db(transaction=True)  # the sending threads read the server with connections of their own
def test_learns_the_servers_concurrency_from_421_refusals(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(max_conns=5, latency_ms=5)
    server = make_server(port=sandbox.port, max_conns=20, wait_timeout=30)
    backend = _backend(server)
    messages = _messages(800)
    chunks = [messages[n::16] for n in range(16)]

    def send(chunk):
        try:
            for message in chunk:
                backend.send_messages([message])
        finally:
            connection.close()  # this thread's own database connection

    threads = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {m.smtp_result.status for m in messages} == {"sent"}
    _assert_received_once(sandbox, messages)
    summary = sandbox.summary()
    assert summary["max_concurrent_sessions"] <= 5
    assert 0 < summary["refused_connections"] < 16  # only the opening burst, never again
    assert all(e.text == EXCHANGE_421[4:] for e in pool_events if e.kind == "421")
    assert get_pool(server).limits.ceiling() <= 5
    learned = [e.detail["value"] for e in pool_events if e.kind == Kind.LEARNED_LIMIT]
    assert learned and max(learned) <= 5
    server.refresh_from_db()
    assert server.learned_max_conns is not None and server.learned_max_conns <= 5


def test_5xx_recipients_fail_at_once_and_the_others_still_get_the_message(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(reject=r"^bounce")
    server = make_server(port=sandbox.port, retries=3)
    [message] = _messages(1, to=["ok@example.test", "bounce@example.test"])

    assert _backend(server).send_messages([message]) == 1

    result = message.smtp_result
    assert (result.status, result.attempts) == ("sent", 1)
    assert result.recipients["ok@example.test"].status == "sent"
    bounced = result.recipients["bounce@example.test"]
    assert (bounced.status, bounced.code) == ("failed", 550)
    assert [m.rcpt_tos for m in sandbox.received] == [("ok@example.test",)]


def test_each_recipient_keeps_its_own_reply_and_the_command_it_answered(smtp_sandbox, make_server):
    """busy@ is deferred at its RCPT, ok@ with the message at the final dot: when the retries
    run out each keeps its own reply (only a reply to RCPT speaks of the address)."""
    sandbox = smtp_sandbox(reject=r"^busy@", reject_reply="450 4.2.1 <{address}>: Mailbox busy", tempfail_rate=1.0)
    server = make_server(port=sandbox.port, retries=1)
    [message] = _messages(1, to=["busy@example.test", "ok@example.test"])

    _backend(server, fail_silently=True).send_messages([message])

    answers = {address: (r.status, r.code, r.text, r.stage) for address, r in message.smtp_result.recipients.items()}
    assert answers == {
        "busy@example.test": ("deferred", 450, "4.2.1 <busy@example.test>: Mailbox busy", "rcpt"),
        "ok@example.test": ("deferred", 451, "4.3.0 Temporary failure, please try again later", "dot"),
    }


def test_a_refused_sender_decides_every_recipient_at_mail(hostile_smtp, make_server):
    hostile = hostile_smtp(replies={"MAIL": "550 5.1.0 Sender denied"})
    [message] = _messages(1, to=["ann@example.test", "bob@example.test"])

    _backend(make_server(port=hostile.port), fail_silently=True).send_messages([message])

    recipients = message.smtp_result.recipients
    assert {(r.status, r.code, r.stage) for r in recipients.values()} == {("failed", 550, "mail")}
    assert not any(command.startswith("RCPT") for command in hostile.commands)


def test_a_rejected_single_recipient_fails_without_retry(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(reject=r"^bounce")
    server = make_server(port=sandbox.port, retries=3)
    [message] = _messages(1, to=["bounce@example.test"])
    _backend(server, fail_silently=True).send_messages([message])
    result = message.smtp_result
    assert (result.status, result.code, result.enhanced_code, result.attempts) == ("failed", 550, "5.1.1", 1)
    assert _kinds(pool_events)[Kind.RETRY] == 0 and _kinds(pool_events)[Kind.FAILURE] == 1


def test_4xx_is_retried_with_backoff_then_deferred(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    server = make_server(port=sandbox.port, retries=2)
    [message] = _messages(1)

    assert _backend(server, fail_silently=True).send_messages([message]) == 0

    result = message.smtp_result
    assert (result.status, result.code, result.attempts) == ("deferred", 451, 3)
    assert result.text == "4.3.0 Temporary failure, please try again later"
    retries = [e for e in pool_events if e.kind == Kind.RETRY]
    assert [e.detail["retry"] for e in retries] == [1, 2]
    assert 0.005 <= retries[0].detail["delay_s"] <= 0.015 and 0.01 <= retries[1].detail["delay_s"] <= 0.03
    assert _kinds(pool_events)[Kind.DEFERRED] == 1
    assert sandbox.received == []


def test_a_caller_that_retries_later_itself_gets_deferred_at_once(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(tempfail_rate=1.0)
    server = make_server(port=sandbox.port, retries=2)
    [message] = _messages(1)

    _backend(server, fail_silently=True, retries=0).send_messages([message])

    assert (message.smtp_result.status, message.smtp_result.attempts) == ("deferred", 1)
    assert Kind.RETRY not in _kinds(pool_events)


def test_final_dot_hook_runs_before_the_content_is_written(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    messages = _messages(3)
    seen = []

    def on_final_dot(message):
        seen.append((message.subject, len(sandbox.received)))  # nothing of it received yet

    _backend(make_server(port=sandbox.port, max_conns=1), on_final_dot=on_final_dot).send_messages(messages)

    assert seen == [("Hello 0", 0), ("Hello 1", 1), ("Hello 2", 2)]


def test_a_failing_final_dot_hook_holds_that_message_back(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    messages = _messages(3)

    def on_final_dot(message):
        if message.subject == "Hello 1":
            raise RuntimeError("database is locked")

    server = make_server(port=sandbox.port, max_conns=1)
    _backend(server, fail_silently=True, on_final_dot=on_final_dot).send_messages(messages)

    assert [m.smtp_result.status for m in messages] == ["sent", "deferred", "sent"]
    assert messages[1].smtp_result.text == "not sent: on_final_dot failed: database is locked"
    assert sorted(message_from_bytes(m.data)["Subject"] for m in sandbox.received) == ["Hello 0", "Hello 2"]


def test_a_hook_raising_stop_batch_holds_its_message_back_and_sends_no_more(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    messages = _messages(6)

    def on_final_dot(message):
        if message.subject == "Hello 2":
            raise StopBatch("the caller lost its claim")

    server = make_server(port=sandbox.port, max_conns=1)
    sent = _backend(server, fail_silently=True, on_final_dot=on_final_dot).send_messages(messages)

    assert sent == 2
    assert sorted(message_from_bytes(m.data)["Subject"] for m in sandbox.received) == ["Hello 0", "Hello 1"]
    assert [(m.smtp_result.status, m.smtp_result.stopped) for m in messages] == [
        ("sent", False),
        ("sent", False),
        *[("deferred", True)] * 4,
    ]
    assert {m.smtp_result.text for m in messages[2:]} == {"not sent: the batch was stopped: the caller lost its claim"}
    assert {m.smtp_result.attempts for m in messages[3:]} == {0}


def test_messages_from_a_generator_are_made_only_as_they_are_sent(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    made_while_received = []

    def messages():
        for message in _messages(10):
            made_while_received.append(len(sandbox.received))
            yield message

    server = make_server(port=sandbox.port, max_conns=1)
    assert _backend(server).send_messages(messages()) == 10

    assert len(sandbox.received) == 10
    # One message ahead of the one on the wire, so its envelope can be pipelined: never more.
    assert all(made_while_received[n] >= n - 2 for n in range(10))


def test_a_4xx_then_success_is_sent_once(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(fault=_once("dot", "451 4.7.1 Greylisted, come back later"))
    server = make_server(port=sandbox.port, retries=2)
    [message] = _messages(1)
    assert _backend(server).send_messages([message]) == 1
    assert (message.smtp_result.status, message.smtp_result.attempts) == ("sent", 2)
    assert len(sandbox.received) == 1


def test_idle_connections_are_closed_after_idle_timeout(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, idle_timeout=1)
    _backend(server).send_messages(_messages(1))
    assert get_pool(server).idle_count() == 1
    time.sleep(1.6)
    assert get_pool(server).idle_count() == 0
    assert _kinds(pool_events)[Kind.IDLE_CLOSE] == 1
    assert sandbox.active == 0


def test_an_idle_close_carries_the_context_of_the_caller_that_used_the_connection_last(
    smtp_sandbox, make_server, pool_events
):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, idle_timeout=1)
    _backend(server, event_context={"campaign_id": 7}).send_messages(_messages(1))
    _backend(server, event_context={"campaign_id": 8}).send_messages(_messages(1))  # the same connection
    time.sleep(1.6)

    [connect] = [event for event in pool_events if event.kind == Kind.CONNECT]
    [idle] = [event for event in pool_events if event.kind == Kind.IDLE_CLOSE]
    assert connect.context == {"campaign_id": 7}
    assert idle.context == {"campaign_id": 8} and idle.connection_id == connect.connection_id
    assert idle.messages_on_connection == 2


def test_every_connection_reports_one_end(smtp_sandbox, make_server, pool_events):
    """A connect, then exactly one of CONNECTION_ENDS: at the cap, after a 421, or closed
    when the pool shuts down."""
    sandbox = smtp_sandbox(max_msgs_per_session=4)
    server = make_server(port=sandbox.port, max_conns=2, max_msgs_per_conn=3, idle_timeout=0)
    _backend(server).send_messages(_messages(10))
    get_pool(server).close()

    opened = {event.connection_id for event in pool_events if event.kind == Kind.CONNECT}
    ends = [event for event in pool_events if event.kind in CONNECTION_ENDS]
    assert len(opened) == sandbox.summary()["sessions"] >= 4
    assert Counter(event.connection_id for event in ends) == dict.fromkeys(opened, 1)
    assert {event.kind for event in ends} == {Kind.ROTATION, Kind.CLOSE}
    assert {event.detail["reason"] for event in ends if event.kind == Kind.CLOSE} == {"shutdown"}


def test_connection_ids_differ_between_processes():
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked worker, as django-q2 starts them
        os.write(write, str(connection_ids.next()).encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = int(os.read(read, 64))
    ours = connection_ids.next()
    assert theirs >> ConnectionIds.COUNT_BITS != ours >> ConnectionIds.COUNT_BITS
    assert connection_label(ours).endswith(f"·{ours & 0xFFFFFF}")


def test_connections_older_than_max_conn_age_are_retired(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conn_age=1, idle_timeout=0)
    backend = _backend(server)
    backend.send_messages(_messages(1))
    time.sleep(1.1)
    backend.send_messages(_messages(1))
    assert _kinds(pool_events)[Kind.AGE_CLOSE] == 1
    backend.send_messages(_messages(1))
    assert _kinds(pool_events)[Kind.CONNECT] == 2


def test_wait_timeout_is_honoured(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conns=1, wait_timeout=1)
    pool = get_pool(server)
    held = pool.checkout()
    started = time.monotonic()
    [message] = _messages(1)
    _backend(server, fail_silently=True).send_messages([message])
    assert 1 <= time.monotonic() - started < 2
    assert message.smtp_result.status == "deferred"
    assert message.smtp_result.text == f"no free connection to {server.name} within 1 s"
    assert (message.smtp_result.stopped, message.smtp_result.attempts) == (True, 0)  # not tried: not late
    assert _kinds(pool_events)[Kind.POOL_WAIT_TIMEOUT] == 1
    pool.checkin(held)


def test_a_connection_killed_mid_data_is_resent_once(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(fault=_once("DATA", "drop"))
    server = make_server(port=sandbox.port, retries=2)
    messages = _messages(3)
    assert _backend(server, max_threads=1).send_messages(messages) == 3
    assert messages[0].smtp_result.attempts == 2
    assert _kinds(pool_events)[Kind.NETWORK_ERROR] == 1
    _assert_received_once(sandbox, messages)


def test_a_link_lost_after_the_final_dot_is_sent_but_ambiguous(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(fault=_once("dot", "drop"))
    server = make_server(port=sandbox.port, retries=2)
    messages = _messages(2)
    assert _backend(server, max_threads=1).send_messages(messages) == 2
    first = messages[0].smtp_result
    assert (first.status, first.ambiguous, first.attempts) == ("sent", True, 1)
    assert not messages[1].smtp_result.ambiguous
    assert _kinds(pool_events)[Kind.AMBIGUOUS] == 1
    _assert_received_once(sandbox, messages)  # the server had it: no blind resend


def test_resend_ambiguous_is_a_choice(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(fault=_once("dot", "drop"))
    server = make_server(port=sandbox.port, retries=2)
    [message] = _messages(1)
    _backend(server, resend_ambiguous=True).send_messages([message])
    assert (message.smtp_result.status, message.smtp_result.ambiguous) == ("sent", False)
    assert len(sandbox.received) == 2  # the duplicate that policy accepts


def test_421_at_every_connect_backs_off_then_defers(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(refuse_with="421 4.7.0 Try again later, closing connection")
    server = make_server(port=sandbox.port, retries=0)
    [message] = _messages(1)
    with pytest.raises(DeliveryFailed, match="none of 1 messages was sent"):
        _backend(server).send_messages([message])
    result = message.smtp_result
    assert (result.status, result.code, result.attempts) == ("deferred", 421, 5)
    assert [e.detail["delay_s"] for e in pool_events if e.kind == Kind.RECONNECT] == [0, 0.01, 0.02, 0.04]


def test_rfc_9422_limits_are_honoured(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(limits="MAILMAX=10 RCPTMAX=2")
    server = make_server(port=sandbox.port)
    messages = _messages(30)
    [wide] = _messages(1, to=[f"w{n}@example.test" for n in range(5)])
    assert _backend(server, max_threads=1).send_messages([*messages, wide]) == 31
    assert _kinds(pool_events)["421"] == 0
    assert {e.detail["cap"] for e in pool_events if e.kind == Kind.ROTATION} == {10}
    wide_copies = [m for m in sandbox.received if m.rcpt_tos[0].startswith("w")]
    assert [len(m.rcpt_tos) for m in wide_copies] == [2, 2, 1]
    assert wide.smtp_result.attempts == 3 and wide.smtp_result.status == "sent"


def test_pipelining_is_used_when_offered(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(pipelining=True, reject=r"^bounce", max_msgs_per_session=7)
    server = make_server(port=sandbox.port)
    messages = [*_messages(20), *_messages(1, to=["bounce@example.test", "ok@example.test"])]
    assert _backend(server, max_threads=2).send_messages(messages) == 21
    assert all(e.detail["pipelining"] for e in pool_events if e.kind == Kind.CONNECT)
    assert messages[-1].smtp_result.recipients["bounce@example.test"].status == "failed"
    _assert_received_once(sandbox, messages)


def test_rate_limit_holds_across_connections(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conns=4, rate_limit=20)
    started = time.monotonic()
    assert _backend(server).send_messages(_messages(21)) == 21
    assert time.monotonic() - started >= 1.0  # 21 messages at 20/s: the 21st waits a full second


def test_starttls_and_auth(smtp_sandbox, make_server, certificates, trust_test_ca):
    sandbox = smtp_sandbox(tls_context=certificates.server_context(), auth="relay:s3cret")
    server = make_server(port=sandbox.port, tls="starttls", auth_protocol="login", username="relay", password="s3cret")
    messages = _messages(5)
    assert _backend(server).send_messages(messages) == 5
    _assert_received_once(sandbox, messages)


def test_implicit_tls(smtp_sandbox, make_server, certificates, trust_test_ca):
    sandbox = smtp_sandbox(tls_context=certificates.server_context(), implicit_tls=True)
    server = make_server(port=sandbox.port, tls="ssl")
    assert _backend(server).send_messages(_messages(3)) == 3


def test_utf8_credentials(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(auth="jörg:pässwörd")
    server = make_server(port=sandbox.port, auth_protocol="plain", username="jörg", password="pässwörd")
    messages = _messages(2)
    assert _backend(server).send_messages(messages) == 2
    _assert_received_once(sandbox, messages)


def test_wrong_password_defers_with_the_servers_reply(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(auth="relay:s3cret")
    server = make_server(port=sandbox.port, auth_protocol="login", username="relay", password="wrong", retries=1)
    [message] = _messages(1)
    _backend(server, fail_silently=True).send_messages([message])
    assert (message.smtp_result.status, message.smtp_result.code) == ("deferred", 535)
    assert _kinds(pool_events)[Kind.CONNECT_FAILED] == 2


def test_custom_headers_are_added_and_message_ids_kept_across_resends(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(max_msgs_per_session=2)
    server = make_server(port=sandbox.port, custom_headers=[["X-Relaydeck-Test", "yes"]])
    messages = _messages(5)
    _backend(server, max_threads=1).send_messages(messages)
    assert all(b"X-Relaydeck-Test: yes" in m.data for m in sandbox.received)
    _assert_received_once(sandbox, messages)


def test_events_carry_the_callers_context(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    _backend(server, event_context={"campaign_id": 7}).send_messages(_messages(1))
    [connect] = [e for e in pool_events if e.kind == Kind.CONNECT]
    assert connect.context == {"campaign_id": 7}
    assert connect.server_id == server.pk and connect.connection_id and connect.duration_s is not None


def test_server_by_name_pk_or_first_enabled(smtp_sandbox, make_server, settings):
    sandbox = smtp_sandbox()
    make_server(name="off", port=1, enabled=False)
    server = make_server(name="relay", port=sandbox.port)
    for choice in ("relay", server.pk, None):
        assert get_connection(BACKEND, server=choice).send_messages(_messages(1)) == 1
    settings.EMAIL_BACKEND = BACKEND
    assert send_mail("Hi", "Body", "a@example.test", ["b@example.test"]) == 1
    assert len(sandbox.received) == 4


def test_pool_is_shared_and_reused_across_get_connection_calls(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    for _ in range(3):
        _backend(server).send_messages(_messages(1))
    assert _kinds(pool_events)[Kind.CONNECT] == 1
    assert sandbox.summary()["sessions"] == 1


@pytest.mark.parametrize("address", ["not an address@@example.test", '"', '"a"@', "a\x00b@example.test"])
def test_a_message_that_cannot_be_rendered_fails_alone(smtp_sandbox, make_server, address):
    """Whatever Django's address parsing raises on it (ValueError, IndexError for a lone quote…)."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    good = _messages(2)
    bad = EmailMessage("Hi", "Body", "news@example.test", [address])
    assert _backend(server, max_threads=1).send_messages([good[0], bad, good[1]]) == 2
    assert bad.smtp_result.status == "failed" and bad.smtp_result.attempts == 0
    assert bad.smtp_result.text.startswith("not sent: ")
    assert len(sandbox.received) == 2


def test_the_next_envelope_rides_behind_the_current_content(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    server = make_server(port=sandbox.port)
    first, second = _messages(2)
    conn = get_pool(server).checkout()
    then = ("news@example.test", ["r1@example.test"])
    result = conn.transact("news@example.test", ["r0@example.test"], prepare_data(first.message().as_bytes()), then)
    assert result.data[0] == 250 and conn.in_flight == then
    result = conn.transact(*then, prepare_data(second.message().as_bytes()))
    assert result.data[0] == 250 and conn.in_flight is None
    assert [m.rcpt_tos for m in sandbox.received] == [("r0@example.test",), ("r1@example.test",)]
    get_pool(server).checkin(conn)


def test_a_retried_message_never_turns_the_envelope_in_flight_into_a_message(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(pipelining=True, fault=_once("dot", "451 4.3.0 Try again"))
    server = make_server(port=sandbox.port, retries=2)
    messages = _messages(5)
    assert _backend(server, max_threads=1).send_messages(messages) == 5
    assert messages[0].smtp_result.attempts == 2
    _assert_received_once(sandbox, messages)
    assert all(b"A campaign message." in m.data for m in sandbox.received)


def test_rotation_with_pipelining_never_reaches_the_server_cap(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(pipelining=True, max_msgs_per_session=7)
    server = make_server(port=sandbox.port, max_msgs_per_conn=5, max_conns=2)
    messages = _messages(60)
    assert _backend(server).send_messages(messages) == 60
    assert sandbox.summary()["replied_421"] == 0
    assert all(e.messages_on_connection == 5 for e in pool_events if e.kind == Kind.ROTATION)
    _assert_received_once(sandbox, messages)


def test_concurrency_is_probed_upward_after_a_quiet_spell(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(max_conns=2)
    server = make_server(port=sandbox.port, max_conns=4)
    pool = ConnectionPool(ServerConfig.of(server), probe_interval_s=0.3)
    held = [pool.checkout(), pool.checkout()]
    with pytest.raises(SessionClosed):
        pool.checkout()  # the server's third session: refused with 421 4.3.2
    assert pool.limits.ceiling() == 2
    for conn in held:
        pool.checkin(conn)
    assert pool.limits.ceiling() == 2  # no sooner than the quiet spell
    time.sleep(0.35)
    pool.checkin(pool.checkout())
    assert pool.limits.ceiling() == 3
    assert [e.detail["value"] for e in pool_events if e.kind == Kind.CONCURRENCY_RAISED] == [3]
    pool.close()


def test_envelope_carries_bare_addresses_when_headers_have_display_names(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(pipelining=True)
    message = EmailMessage("Hi", "Body\n", "News Desk <news@example.test>", ["Ann Reader <ann@example.test>"])

    assert _backend(make_server(port=sandbox.port)).send_messages([message]) == 1

    (received,) = sandbox.received
    assert (received.mail_from, received.rcpt_tos) == ("news@example.test", ("ann@example.test",))


@pytest.mark.parametrize(
    "content, on_the_wire",
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".top\r\n.x\r\nend", b"..top\r\n..x\r\nend\r\n.\r\n"),
        (b"a\nb\n.c\n", b"a\r\nb\r\n..c\r\n.\r\n"),
        (b"a\rb\r\n.\r\n", b"a\r\nb\r\n..\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_message_data_has_crlf_lines_dot_stuffing_and_the_final_dot(content, on_the_wire):
    assert prepare_data(content) == on_the_wire
