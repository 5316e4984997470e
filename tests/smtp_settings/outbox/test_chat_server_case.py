"""Issue 12's case, end to end: an application opens one SMTP connection per message, hundreds
at once, to the relay; Relaydeck accepts every one and delivers each exactly once, never
opening more connections downstream than the server entry allows. Real parts throughout:
Postfix's smtp-source as the application, the relay, qcluster workers, and `manage.py
smtp_sandbox` refusing connections beyond 20 with Exchange's 421 4.3.2."""

import importlib.util
import smtplib
import subprocess

import pytest

from smtp_settings.models import OutboxMessage
from smtp_settings.outbox import delivery
from tests.campaigns.test_sending import wait_for
from tests.conftest import ROOT
from tests.smtp_settings.test_relay import queued_id, send

pytestmark = pytest.mark.django_db(transaction=True)

LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture(scope="session")
def smtp_source() -> tuple[str, dict]:
    """Postfix's smtp-source, unpacked from Debian's package as the benchmarks do."""
    spec = importlib.util.spec_from_file_location("postfix", ROOT / "bench" / "postfix.py")
    postfix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(postfix)
    binary, env = postfix.tool("smtp-source")
    return str(binary), env


def test_250_connections_at_once_are_all_accepted_and_delivered_once_over_five(
    smtp_relay, smtp_source, sandbox_process, make_server, workers
):
    sandbox = sandbox_process("--max-conns", "20", "--quiet")
    make_server(name="Exchange", host="127.0.0.1", port=sandbox.port, max_conns=5)
    relay = smtp_relay(trusted_networks=LOOPBACK)
    binary, env = smtp_source
    # 250 sessions at once, one message each: the chat server's @all post.
    command = [binary, "-s", "250", "-m", "250", "-l", "1500", "-N", "-f", "chat@example.test"]
    command += ["-t", "member@example.test", "-S", "You were mentioned", f"127.0.0.1:{relay.port}"]
    subprocess.run(command, env=env, check=True, timeout=120, capture_output=True)
    assert OutboxMessage.objects.count() == 250  # smtp-source exits 0 only if every message got its 250

    workers(Q_WORKERS="2")
    wait_for(lambda: OutboxMessage.objects.filter(status="sent").count() == 250, 120, "all 250 delivered")
    summary = sandbox.stop()
    assert summary["received"] == 250
    assert summary["duplicates"] == 0
    assert summary["refused_connections"] == 0
    assert summary["max_concurrent_sessions"] <= 5


def test_a_message_accepted_just_before_the_relay_is_killed_is_delivered(
    relay_process,
    smtp_sandbox,
    make_server,
    workers,
):
    """The kill may come before the relay woke the delivery, or while it asked for a sender
    (the sender's row written, its task not): the watchdog (every minute, and when a worker
    starts) wakes one, at the latest once that row's lease has run out."""
    sandbox = smtp_sandbox()
    make_server(host="127.0.0.1", port=sandbox.port)
    relay, port = relay_process(OUTBOX_LEASE_S="3")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        outbox_id = queued_id(send(smtp))
        relay.kill()  # SIGKILL, the moment the 250 is read
        relay.wait()
    wait_for(lambda: not delivery.live_senders(), 10, "a sender asked for by the relay, if any, out of its lease")
    workers(Q_WORKERS="1", OUTBOX_LEASE_S="3")
    wait_for(lambda: OutboxMessage.objects.get(pk=outbox_id).status == "sent", 60, "the message delivered")
    [received] = sandbox.received
    assert (received.message_id, received.mail_from, received.rcpt_tos) == (
        "<order-1@example.test>",
        "app@example.test",
        ("reader@example.test",),
    )
