"""The sandbox's own bookkeeping, which other tests rely on to judge what a client did."""

import pytest
from django.core.mail import EmailMessage, get_connection

from smtp_settings.sandbox import busiest_window

pytestmark = pytest.mark.django_db(transaction=True)  # sending threads use connections of their own


def test_the_busiest_second_counts_its_start_and_not_its_end():
    assert busiest_window([]) == 0
    assert busiest_window([5.0]) == 1
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.2, 1.4, 1.98]) == 5  # 1.0 to 1.98, with 0.99
    assert busiest_window([0.0, 1.0, 2.0, 3.0]) == 1
    assert busiest_window([0.0, 0.1, 0.2], window_s=0.15) == 2


def test_the_summary_says_how_fast_messages_arrived(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    messages = [EmailMessage("s", "b", "a@example.test", [f"r{n}@example.test"]) for n in range(5)]
    get_connection("smtp_settings.backends.RotatingEmailBackend", server=make_server(port=sandbox.port)).send_messages(
        messages
    )

    summary = sandbox.summary()
    times = [message.received_at for message in sandbox.received]
    assert times == sorted(times) and len(times) == 5
    assert summary["max_per_second"] == 5 and summary["receiving_s"] == round(times[-1] - times[0], 3) < 1


def test_a_long_running_sandbox_keeps_no_bodies_and_still_counts_duplicates(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(keep_bodies=False)
    message = EmailMessage(
        "s", "b" * 10_000, "a@example.test", ["r@example.test"], headers={"Message-ID": "<1@x.test>"}
    )
    backend = get_connection("smtp_settings.backends.RotatingEmailBackend", server=make_server(port=sandbox.port))
    backend.send_messages([message])
    backend.send_messages([message])  # the same Message-ID again

    assert [received.data for received in sandbox.received] == [b"", b""]
    assert sandbox.summary()["received"] == 2 and sandbox.summary()["unique_message_ids"] == 1
