"""The backend under the cluster's shared limits: quota windows that make a batch wait, throttle
replies that lower the server's rate for everyone and recover, and a server disabled or deleted
while its batch is out. Asserts on what the sandbox received and what the backend answered."""

import time

import pytest

from smtp_settings.events import Kind
from smtp_settings.limit_stores import store
from smtp_settings.models import SmtpServer
from smtp_settings.shared_limits import THROTTLE_STEP_UP
from tests.campaigns.test_sending import _when_received, wait_for
from tests.smtp_settings.test_backend import _assert_received_once, _backend, _messages

pytestmark = pytest.mark.django_db(transaction=True)

SES_454 = "454 Throttling failure: Maximum sending rate exceeded"


def test_a_full_daily_quota_stops_the_batch_and_says_when_it_has_room(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(name="SES", port=sandbox.port, quota_per_day=3, max_conns=1)
    messages = _messages(5)

    assert _backend(server).send_messages(messages) == 3

    assert len(sandbox.received) == 3
    waited = [message.smtp_result for message in messages[3:]]
    assert {(r.status, r.stopped, r.attempts) for r in waited} == {("deferred", True, 0)}
    assert {r.text for r in waited} == {"waiting for SES's daily quota: 3 of 3 messages used"}
    assert all(time.time() < r.resume_at <= time.time() + 86400 * 1.05 for r in waited)


def test_a_quota_counted_in_recipients_counts_every_recipient(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(name="SES", port=sandbox.port, quota_per_day=3, quota_counts="recipients")
    to_two = _messages(2, to=["a@example.test", "b@example.test"])
    to_one = _messages(1, to=["c@example.test"])

    backend = _backend(server, fail_silently=True)

    assert backend.send_messages(to_two[:1]) == 1
    assert backend.send_messages(to_two[1:]) == 0  # 2 more would make 4 of 3
    assert backend.send_messages(to_one) == 1

    assert [message.rcpt_tos for message in sandbox.received] == [
        ("a@example.test", "b@example.test"),
        ("c@example.test",),
    ]
    refused = to_two[1].smtp_result
    assert (refused.status, refused.stopped, refused.text) == (
        "deferred",
        True,
        "waiting for SES's daily quota: 2 of 3 recipients used",
    )


def _throttle_at_rcpt(*numbers: int):
    """A sandbox fault that answers SES's 454 to the RCPTs with these numbers (1: the first)."""
    seen = []

    def fault(stage, _sandbox):
        if stage != "RCPT":
            return None
        seen.append(stage)
        return SES_454 if len(seen) in numbers else None

    return fault


def test_a_throttle_reply_halves_the_rate_once_and_the_heartbeat_raises_it_back(
    smtp_sandbox, make_server, pool_events, settings
):
    """Two 454s in a burst (within THROTTLE_HOLD_S) lower the rate once: the cluster halves it,
    it does not quarter it. Every quiet SMTP_THROTTLE_RECOVERY_S, it rises by a quarter, until
    it is back at the configured rate and the throttle is lifted."""
    settings.SMTP_THROTTLE_RECOVERY_S = 1
    sandbox = smtp_sandbox(fault=_throttle_at_rcpt(10, 11))
    server = make_server(port=sandbox.port, rate_limit=20, max_conns=2, retries=2)
    messages = _messages(20)

    assert _backend(server).send_messages(messages) == 20

    _assert_received_once(sandbox, messages)
    throttled = [event for event in pool_events if event.kind == Kind.THROTTLED]
    assert [(e.code, e.text, e.detail) for e in throttled] == [
        (454, "Throttling failure: Maximum sending rate exceeded", {"rate": 10.0})
    ]
    assert store().state(server.pk).throttled_rate is not None
    assert sum(event.kind == Kind.RETRY for event in pool_events) == 2

    lifted = lambda: any(event.kind == Kind.THROTTLE_LIFTED for event in pool_events)  # noqa: E731
    wait_for(lifted, 10, "the throttle to be lifted")
    eased = [event.detail["rate"] for event in pool_events if event.kind == Kind.THROTTLE_EASED]
    assert eased == pytest.approx([10 * THROTTLE_STEP_UP**step for step in (1, 2, 3)])  # then 24.4 >= 20: lifted
    assert store().state(server.pk).throttled_rate is None


def test_messages_sent_while_throttled_go_at_the_lowered_rate(smtp_sandbox, make_server, settings):
    settings.SMTP_THROTTLE_RECOVERY_S = 60
    sandbox = smtp_sandbox(fault=_throttle_at_rcpt(1))
    server = make_server(port=sandbox.port, rate_limit=40, max_conns=4, retries=1)

    assert _backend(server).send_messages(_messages(21)) == 21

    arrivals = sorted(message.received_at for message in sandbox.received)
    assert arrivals[-1] - arrivals[0] >= 0.8  # about 20 turns at 20/s (1 s), far from 40/s (0.5 s)


def _disable(server):
    return lambda: SmtpServer.objects.filter(pk=server.pk).update(enabled=False)


def test_a_server_disabled_mid_batch_sends_nothing_a_second_later_and_the_rest_waits_untried(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(latency_ms=2)
    server = make_server(name="Relay", port=sandbox.port, max_conns=2)
    disabled_at = []
    sandbox.fault = _when_received(20, lambda: (_disable(server)(), disabled_at.append(time.monotonic())))
    messages = _messages(2000)

    sent = _backend(server).send_messages(messages)  # never raises: 20 or more went

    assert 20 <= sent < 2000
    assert max(message.received_at for message in sandbox.received) < disabled_at[0] + 1.5
    untried = [message.smtp_result for message in messages if message.smtp_result.status != "sent"]
    assert len(untried) == 2000 - sent == 2000 - len(sandbox.received)
    assert {(r.status, r.stopped, r.attempts, r.resume_at) for r in untried} == {("deferred", True, 0, None)}
    assert {r.text for r in untried} == {"not sent: SMTP server “Relay” is disabled"}


def test_a_server_deleted_mid_batch_sends_nothing_a_second_later_nor_in_the_next_batch(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(latency_ms=2)
    server = make_server(name="Relay", port=sandbox.port, max_conns=2)
    deleted_at = []
    delete = lambda: (SmtpServer.objects.filter(pk=server.pk).delete(), deleted_at.append(time.monotonic()))  # noqa: E731
    sandbox.fault = _when_received(600, delete)  # after a heartbeat has read the row: a second or more in
    backend = _backend(server.pk, fail_silently=True)
    messages = _messages(3000)

    sent = backend.send_messages(messages)

    assert 600 <= sent < 3000
    assert max(message.received_at for message in sandbox.received) < deleted_at[0] + 1.5
    untried = [message.smtp_result for message in messages if message.smtp_result.status != "sent"]
    assert {r.text for r in untried} == {"not sent: SMTP server “Relay” was deleted"}
    later = _messages(3)
    assert backend.send_messages(later) == 0
    assert {(m.smtp_result.status, m.smtp_result.attempts) for m in later} == {("deferred", 0)}
    assert len(sandbox.received) == sent


def test_a_thread_left_without_a_connection_leaves_the_batch_to_the_others(smtp_sandbox, make_server):
    """Another process holds one of the two connections: this process sends on the other, and
    the thread that found none within wait_timeout gives its message, and the one it had
    lined up, back untried, once."""
    sandbox = smtp_sandbox(latency_ms=5)
    server = make_server(port=sandbox.port, max_conns=2, wait_timeout=1)
    now = time.time()
    store().take_slot(server.pk, "elsewhere.example:1", 2, now + 30, now)
    messages = _messages(300)
    started = time.monotonic()

    sent = _backend(server, fail_silently=True).send_messages(messages)

    untried = [m.smtp_result for m in messages if m.smtp_result.status != "sent"]
    assert len(untried) <= 2 and sent == len(sandbox.received) == 300 - len(untried)
    assert {(r.stopped, r.attempts) for r in untried} <= {(True, 0)}
    assert time.monotonic() - started < 10  # not a second's wait per message
    _assert_received_once(sandbox, [m for m in messages if m.smtp_result.status == "sent"])


def test_with_the_store_out_of_reach_nothing_is_sent_nothing_raises_and_every_message_waits(
    smtp_sandbox, make_server, settings, closed_port
):
    """No connection without a slot, no message without its turn: a Redis that is down (here,
    a port nobody listens on) makes the batch wait, untried, and the store's error is logged."""
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, rate_limit=100, wait_timeout=1)
    reachable, settings.REDIS_URL = settings.REDIS_URL, f"redis://127.0.0.1:{closed_port}/0"
    store.cache_clear()
    messages = _messages(3)

    assert _backend(server, fail_silently=True).send_messages(messages) == 0

    settings.REDIS_URL = reachable
    store.cache_clear()
    assert sandbox.received == []
    assert {(m.smtp_result.status, m.smtp_result.stopped, m.smtp_result.attempts) for m in messages} == {
        ("deferred", True, 0)
    }
