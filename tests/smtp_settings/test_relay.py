"""The SMTP relay (`manage.py smtp_relay`): who may send through it, what it refuses, and that a
250 means the message is in the outbox, committed, exactly as the client sent it."""

import asyncio
import base64
import contextlib
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from smtp_settings.models import OutboxMessage, RelayCredential
from smtp_settings.outbox import queue
from smtp_settings.outbox.queue import Envelope
from smtp_settings.relay import writer
from smtp_settings.relay.credentials import Sender
from smtp_settings.relay.writer import COMMIT_FAILED, OutboxWriter
from tests.campaigns.test_sending import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the relay writes from threads of its own

LOOPBACK = ["127.0.0.0/8"]
PASSWORD = "correct horse battery staple"
MESSAGE = (
    "From: App <app@example.test>\r\n"
    "To: reader@example.test\r\n"
    "Subject: Your order\r\n"
    "Message-ID: <order-1@example.test>\r\n"
    "\r\n"
    ".A line that starts with a dot, and one that is a dot:\r\n"
    ".\r\n"
    "..\r\n"
    "Grüße, in UTF-8; a bare\nline feed, kept as it came\r\n"
).encode()


def make_credential(username: str = "app", *, servers=(), enabled: bool = True) -> RelayCredential:
    credential = RelayCredential(name=username, username=username, enabled=enabled)
    credential.set_password(PASSWORD)
    credential.save()
    credential.servers.set(servers)
    return credential


def connect(relay) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", relay.port, timeout=30)


def auth(smtp: smtplib.SMTP, username: str, password: str, mechanism: str = "PLAIN", initial_response=True):
    """One AUTH exchange (smtplib's login() would try the next mechanism after a 535)."""
    smtp.ehlo_or_helo_if_needed()
    smtp.user, smtp.password = username, password
    return smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"), initial_response_ok=initial_response)


def send(smtp: smtplib.SMTP, data: bytes = MESSAGE, mail_from="app@example.test", to=("reader@example.test",)):
    """The reply to the final dot."""
    smtp.ehlo_or_helo_if_needed()
    assert smtp.mail(mail_from)[0] == 250
    for recipient in to:
        assert smtp.rcpt(recipient)[0] == 250
    return smtp.data(data)


def refuses_to_relay(smtp: smtplib.SMTP) -> bool:
    """Whether the relay answers this session's mail with 530: at RCPT, since MAIL is taken from
    anyone (a bounce report needs no AUTH), and at DATA; the transaction is reset after."""
    smtp.ehlo_or_helo_if_needed()
    replies = [smtp.mail("app@example.test")[0], smtp.rcpt("reader@example.test"), smtp.docmd("DATA")[0]]
    smtp.rset()
    return replies == [250, (530, b"5.7.0 Authentication required"), 530]


def queued_id(reply: tuple[int, bytes]) -> int:
    code, text = reply
    assert code == 250, reply
    return int(re.fullmatch(rb"2\.0\.0 Ok: queued as (\d+)", text)[1])


class RawSession:
    """An SMTP client that sends command lines byte for byte, as no library would."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.replies = self.sock.makefile("rb")
        assert self.reply() == 220
        assert self.command(b"EHLO client.example.test") == 250

    def reply(self) -> int:
        line = self.replies.readline()
        while line[3:4] == b"-":
            line = self.replies.readline()
        return int(line[:3])

    def command(self, line: bytes) -> int:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


# -- who may send --


@pytest.mark.parametrize("trusted_networks", [[], ["10.0.0.0/8", "::1/128"]])
def test_a_client_outside_the_trusted_networks_must_authenticate(smtp_relay, trusted_networks):
    relay = smtp_relay(trusted_networks=trusted_networks)
    with connect(relay) as smtp:
        smtp.ehlo()
        assert sorted(smtp.esmtp_features["auth"].split()) == ["LOGIN", "PLAIN"]
        assert smtp.mail("app@example.test")[0] == 250  # for now: a bounce report needs no AUTH
        assert smtp.rcpt("reader@example.test") == (530, b"5.7.0 Authentication required")
        assert smtp.docmd("DATA")[0] == 530
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("username", "password"), [("app", "a wrong password"), ("nobody", PASSWORD), ("retired", PASSWORD)]
)
def test_a_wrong_password_an_unknown_user_and_a_disabled_credential_get_535(smtp_relay, username, password):
    make_credential("app")
    make_credential("retired", enabled=False)
    relay = smtp_relay()
    with connect(relay) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            auth(smtp, username, password)
        assert refused.value.smtp_code == 535
        assert refuses_to_relay(smtp)
    assert not RelayCredential.objects.filter(last_used_at__isnull=False).exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response", [True, False], ids=["initial-response", "challenge"])
def test_a_250_means_the_message_is_committed_as_sent_with_the_credentials_route(
    smtp_relay, make_server, mechanism, initial_response
):
    servers = [make_server(), make_server()]
    make_credential("app", servers=servers)
    relay = smtp_relay()
    with connect(relay) as smtp:
        assert auth(smtp, "app", PASSWORD, mechanism, initial_response)[0] == 235
        reply = send(smtp, to=["reader@example.test", "cc@example.test"])
        message = OutboxMessage.objects.get(pk=queued_id(reply))  # at once: it was committed before the 250
    assert bytes(message.data) == MESSAGE  # what smtplib was given: dots unstuffed, line ends as they came
    assert (message.mail_from, message.recipients) == ("app@example.test", ["reader@example.test", "cc@example.test"])
    assert message.route == [server.pk for server in servers]
    assert (message.source, message.submitted_by, message.status) == ("relay", "app", "queued")
    assert (message.message_id, message.subject) == ("<order-1@example.test>", "Your order")
    assert RelayCredential.objects.get().last_used_at is not None


def test_a_trusted_network_sends_without_auth_by_the_default_route(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        first = queued_id(send(smtp))
        bounce = queued_id(send(smtp, mail_from=""))  # the null sender, MAIL FROM:<>
    message = OutboxMessage.objects.get(pk=first)
    assert (message.route, message.submitted_by, bytes(message.data)) == ([], "127.0.0.1", MESSAGE)
    assert OutboxMessage.objects.get(pk=bounce).mail_from == ""


def test_starttls_is_offered_with_a_certificate_and_auth_waits_for_it(smtp_relay, certificates):
    make_credential("app")
    relay = smtp_relay(tls_context=certificates.server_context(), local_networks=[])  # loopback is not local here
    with connect(relay) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        plain = base64.b64encode(f"\0app\0{PASSWORD}".encode()).decode()
        assert smtp.docmd("AUTH", f"PLAIN {plain}")[0] == 538  # encryption required
        assert refuses_to_relay(smtp)
        smtp.starttls(context=ssl.create_default_context(cafile=certificates.ca_file))
        smtp.ehlo()
        assert smtp.has_extn("auth") and not smtp.has_extn("starttls")
        assert auth(smtp, "app", PASSWORD)[0] == 235
        pk = queued_id(send(smtp))
    assert OutboxMessage.objects.get(pk=pk).submitted_by == "app"


def test_from_loopback_auth_needs_no_starttls(smtp_relay, certificates):
    make_credential("app")
    relay = smtp_relay(tls_context=certificates.server_context())
    with connect(relay) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and smtp.has_extn("auth")
        assert auth(smtp, "app", PASSWORD)[0] == 235
        queued_id(send(smtp))


# -- what it refuses --


def test_an_oversized_message_gets_552_and_a_smaller_one_still_goes(smtp_relay, settings):
    settings.RELAY_MAX_MESSAGE_BYTES = 1000
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "1000"
        assert smtp.mail("app@example.test", ["SIZE=1001"])[0] == 552
        assert send(smtp, b"Subject: big\r\n\r\n" + b"x" * 990 + b"\r\n")[0] == 552
        pk = queued_id(send(smtp, b"Subject: small\r\n\r\nfits\r\n"))
    assert list(OutboxMessage.objects.values_list("pk", flat=True)) == [pk]


def test_recipients_beyond_the_limit_get_452(smtp_relay, settings):
    settings.RELAY_MAX_RECIPIENTS = 3
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        smtp.ehlo()
        smtp.mail("app@example.test")
        assert [smtp.rcpt(f"r{n}@example.test")[0] for n in range(5)] == [250, 250, 250, 452, 452]
        pk = queued_id(smtp.data(MESSAGE))
    assert OutboxMessage.objects.get(pk=pk).recipients == ["r0@example.test", "r1@example.test", "r2@example.test"]


HOSTILE_ADDRESSES = [  # (address, with SMTPUTF8)
    (b"<app@example.test>\rRCPT TO:<victim@example.test>", False),  # a bare CR, to smuggle a command
    (b'<"app\rRCPT TO:<victim@example.test>"@example.test>', False),  # the same, quoted
    (b"<app\x00@example.test>", False),
    (b"<app\x0b@example.test>", False),
    (b"<app@example.test\x7f>", False),
    (b"<app\xc2\x85@example.test>", True),  # U+0085, next line
    (b"<app\xe2\x80\xa8@example.test>", True),  # U+2028, line separator
    (b"<\xff\xfe@example.test>", True),  # not UTF-8
    (b"<j\xc3\xb6rg@example.test>", False),  # UTF-8 without SMTPUTF8
]


@pytest.mark.parametrize(("address", "smtputf8"), HOSTILE_ADDRESSES)
def test_control_characters_and_bad_bytes_in_the_envelope_are_refused(smtp_relay, address, smtputf8):
    relay = smtp_relay(trusted_networks=LOOPBACK)
    options = b" SMTPUTF8" if smtputf8 else b""
    session = RawSession(relay.port)
    try:
        assert session.command(b"MAIL FROM:" + address + options) in (501, 553)
        assert session.command(b"RCPT TO:<reader@example.test>") == 503  # no transaction was started
        assert session.command(b"MAIL FROM:<app@example.test>" + options) == 250
        assert session.command(b"RCPT TO:" + address) in (501, 553)
        assert session.command(b"DATA") == 503  # no recipient was taken
    finally:
        session.close()
    assert not OutboxMessage.objects.exists()


def test_utf8_addresses_go_with_smtputf8(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        smtp.sendmail("jörg@example.test", ["zoë@例え.テスト"], MESSAGE, mail_options=["SMTPUTF8"])
    message = OutboxMessage.objects.get()
    assert (message.mail_from, message.recipients) == ("jörg@example.test", ["zoë@例え.テスト"])


def test_sessions_beyond_the_limit_are_greeted_with_421(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK, max_sessions=2)
    first, second = connect(relay), connect(relay)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        connect(relay)
    assert refused.value.smtp_code == 421
    first.quit()
    deadline = time.monotonic() + 5
    while relay.sessions > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with connect(relay) as third:
        queued_id(send(third))
    second.quit()


def test_a_silent_client_is_cut_off(smtp_relay, settings):
    settings.RELAY_TIMEOUT_S = 1
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        smtp.ehlo()
        time.sleep(1.5)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


# -- committing --


def test_a_failed_commit_answers_451_writes_nothing_and_the_retry_goes_through(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK)
    table = OutboxMessage._meta.db_table
    with connect(relay) as smtp:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} RENAME TO outbox_elsewhere")
        try:
            failed = send(smtp)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE outbox_elsewhere RENAME TO {table}")
        assert failed[0] == 451
        assert not OutboxMessage.objects.exists()
        pk = queued_id(send(smtp))  # the client still has its copy, and tries again
    assert bytes(OutboxMessage.objects.get(pk=pk).data) == MESSAGE


def one_group(envelopes: list[Envelope]) -> list[str]:
    """The replies of a writer that finds these messages waiting, as from as many sessions."""
    writer = OutboxWriter()

    async def sessions() -> list[str]:
        waiting = [asyncio.create_task(writer.submit(envelope, Sender("app"))) for envelope in envelopes]
        await asyncio.sleep(0)  # all of them are waiting
        writer.start()
        return await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)

    try:
        return asyncio.run(sessions())
    finally:
        writer.stop()


def envelope(data: bytes = MESSAGE, **fields) -> Envelope:
    return Envelope("app@example.test", ["reader@example.test"], data, source="relay", **fields)


def accepted(replies: list[str]) -> list[int]:
    return [int(re.fullmatch(r"250 2\.0\.0 Ok: queued as (\d+)", reply)[1]) for reply in replies]


def test_one_refused_message_does_not_fail_the_others_of_its_group():
    replies = one_group([envelope(), envelope(b""), envelope()])
    assert replies[1] == "554 5.6.0 the message is empty"
    assert sorted(accepted([replies[0], replies[2]])) == sorted(OutboxMessage.objects.values_list("pk", flat=True))


def test_control_characters_in_a_subject_or_message_id_do_not_fail_its_group():
    """PostgreSQL refuses a NUL in text: the columns the page shows leave them out; the message keeps them."""
    odd = b"Subject: a\0b\r\nMessage-ID: <\x01odd@example.test>\r\n\r\nHi\r\n"

    replies = one_group([envelope(), envelope(odd), envelope()])

    message = OutboxMessage.objects.get(pk=accepted(replies)[1])
    assert (message.subject, message.message_id, bytes(message.data)) == ("ab", "<odd@example.test>", odd)
    assert OutboxMessage.objects.count() == 3


def test_a_subject_in_raw_utf8_or_encoded_words_folded_over_lines_is_shown_as_written():
    raw = "Subject: Grüße\r\n  aus Köln\r\nmessage-id:\r\n <fold@example.test>\r\n\r\nHi\r\n".encode()
    encoded = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nX-Subject: not this\r\n\r\nSubject: nor this\r\n"

    replies = one_group([envelope(raw), envelope(encoded)])

    shown = OutboxMessage.objects.filter(pk__in=accepted(replies)).order_by("pk").values_list("subject", "message_id")
    assert list(shown) == [("Grüße aus Köln", "<fold@example.test>"), ("Grüße", "")]


def test_a_message_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_written():
    # No integer column holds 2**64, on SQLite or PostgreSQL: a stand-in for whatever a
    # database may refuse that the checks before it let through.
    replies = one_group([envelope(), envelope(priority=2**64), envelope()])

    assert replies[1] == COMMIT_FAILED
    assert sorted(accepted([replies[0], replies[2]])) == sorted(OutboxMessage.objects.values_list("pk", flat=True))


def test_a_refused_message_keeps_its_own_reply_when_the_commit_of_its_group_fails():
    replies = one_group([envelope(b""), envelope(priority=2**64)])
    assert replies == ["554 5.6.0 the message is empty", COMMIT_FAILED]


@contextlib.contextmanager
def outbox_locked():
    """Hold the outbox table's write lock from the test's own connection, as another process might."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {OutboxMessage._meta.db_table} IN EXCLUSIVE MODE")
        else:  # SQLite's whole database, taken by BEGIN IMMEDIATE (transaction_mode)
            cursor.execute("SELECT 1")
        yield


def test_a_message_the_stuck_writer_cannot_take_up_gets_451_and_one_it_took_waits_for_its_commit(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK, writer_deadline_s=1)
    replies = {}

    def application(name: str) -> None:
        with connect(relay) as smtp:
            replies[name] = send(smtp, MESSAGE.replace(b"order-1@", f"{name}@".encode()))

    taken, waiting = (threading.Thread(target=application, args=(name,)) for name in ("taken", "waiting"))
    with outbox_locked():
        taken.start()
        time.sleep(0.5)  # the writer has taken it up, and waits for the lock
        waiting.start()
        waiting.join(timeout=10)
        assert replies["waiting"][0] == 451  # within the deadline, while the lock is held
        assert "taken" not in replies  # past the deadline, but a message being written gets no 451
    taken.join(timeout=30)

    assert queued_id(replies["taken"])
    assert list(OutboxMessage.objects.values_list("message_id", flat=True)) == ["<taken@example.test>"]


def test_an_unexpected_error_in_the_writer_answers_451_and_the_next_message_goes_through(smtp_relay, monkeypatch):
    def fails_once(envelope):
        monkeypatch.setattr(writer, "build", queue.build)
        raise RuntimeError("a bug")

    monkeypatch.setattr(writer, "build", fails_once)
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        assert send(smtp)[0] == 451
        pk = queued_id(send(smtp))
    assert list(OutboxMessage.objects.values_list("pk", flat=True)) == [pk]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end
def test_once_the_writer_thread_is_gone_messages_get_421(smtp_relay, monkeypatch):
    def ends_the_thread(envelope):
        raise SystemExit

    monkeypatch.setattr(writer, "build", ends_the_thread)
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        assert send(smtp)[0] == 451  # the message it had taken up
    relay.writer._thread.join(timeout=5)
    with connect(relay) as smtp:
        assert send(smtp)[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
    assert not OutboxMessage.objects.exists()


def test_the_delivery_is_woken_once_the_message_is_committed(smtp_relay, monkeypatch):
    woken = []
    monkeypatch.setattr(queue, "wake", lambda: woken.append(list(OutboxMessage.objects.values_list("pk", flat=True))))
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        pk = queued_id(send(smtp))
    wait_for(lambda: woken, 10, "the delivery woken")
    assert woken[0] == [pk]  # what it reads is committed


@pytest.mark.parametrize("rung", [True, False])
def test_a_stopping_relay_wakes_the_delivery_for_a_last_commit_only(monkeypatch, rung):
    woken = []
    monkeypatch.setattr(queue, "wake", lambda: woken.append(True))
    waker = writer._Waker()
    if rung:
        waker.ring()  # a commit, just before the relay stops
    waker.start()
    waker.stop(timeout_s=5)
    assert woken == ([True] if rung else [])


def test_a_failure_to_wake_the_delivery_after_the_commit_still_answers_250(smtp_relay, monkeypatch):
    def unreachable():
        raise ConnectionError("the delivery cannot be reached")

    monkeypatch.setattr(queue, "wake", unreachable)
    relay = smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as smtp:
        pk = queued_id(send(smtp))
    assert OutboxMessage.objects.filter(pk=pk).exists()


def test_250_concurrent_connections_are_all_accepted(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK)
    count = 250
    all_connected = threading.Barrier(count)
    replies = [None] * count

    def application(n: int) -> None:
        with connect(relay) as smtp:
            smtp.ehlo()
            all_connected.wait(timeout=60)
            replies[n] = send(smtp, MESSAGE.replace(b"order-1@", f"order-{n}@".encode()), to=[f"r{n}@example.test"])

    threads = [threading.Thread(target=application, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [reply[0] if reply else None for reply in replies] == [250] * count
    assert OutboxMessage.objects.count() == OutboxMessage.objects.values("message_id").distinct().count() == count


def test_a_session_is_logged_in_one_line_without_password_or_message(smtp_relay, caplog):
    caplog.set_level(logging.INFO)
    make_credential("app")
    relay = smtp_relay()
    with connect(relay) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            auth(smtp, "app", PASSWORD[::-1], "LOGIN")
        auth(smtp, "app", PASSWORD, "LOGIN")
        queued_id(send(smtp))
    deadline = time.monotonic() + 5
    while relay.sessions and time.monotonic() < deadline:  # it ends on the relay's thread, after QUIT
        time.sleep(0.01)
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("smtp_settings.relay")]
    sessions = [line for line in lines if line.startswith("Relay session")]
    assert len(sessions) == 1
    assert re.fullmatch(
        r"Relay session from 127\.0\.0\.1 \(app\) ended after [\d.]+ s: "
        r"1 messages accepted, 0 deferred, 0 refused, 1 failed AUTH",
        sessions[0],
    )
    for secret in (PASSWORD, PASSWORD[::-1], base64.b64encode(PASSWORD.encode()).decode(), "Grüße", "Your order"):
        assert secret not in caplog.text


# -- crashes: a real `manage.py smtp_relay` --


def test_sigkill_right_after_the_250_loses_nothing(relay_process):
    relay, port = relay_process()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        reply = send(smtp)
        relay.kill()  # SIGKILL, the moment the 250 is read
        relay.wait()
    assert bytes(OutboxMessage.objects.get(pk=queued_id(reply)).data) == MESSAGE


def unread_bytes(server_port: int, client_port: int) -> int:
    """What the client sent on this loopback connection that the server has not read yet: its
    socket's receive queue, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, remote, _, queues = line.split()[:5]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"no connection from port {client_port} to {server_port}")


def test_sigkill_mid_data_gives_no_250_and_writes_nothing(relay_process):
    relay, port = relay_process()
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo()
    smtp.mail("app@example.test")
    smtp.rcpt("reader@example.test")
    assert smtp.docmd("DATA")[0] == 354
    smtp.send(re.sub(rb"(?m)^\.", b"..", MESSAGE))  # all of it, dots stuffed, but the final dot
    client_port = smtp.sock.getsockname()[1]
    deadline = time.monotonic() + 10
    while unread_bytes(port, client_port) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unread_bytes(port, client_port) == 0  # the relay has read it, in DATA
    assert not OutboxMessage.objects.exists()  # and holds it: nothing is written before the dot

    relay.kill()
    relay.wait()
    with pytest.raises(OSError):  # SMTPServerDisconnected or a reset: never a reply
        smtp.send(b".\r\n")
        smtp.getreply()
    smtp.close()

    relay, port = relay_process()  # restarted: it has nothing of the dead one's session to write
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as again:
        pk = queued_id(send(again, MESSAGE.replace(b"order-1@", b"order-2@")))
    assert list(OutboxMessage.objects.values_list("pk", "message_id")) == [(pk, "<order-2@example.test>")]


def test_listen_must_be_host_and_port():
    with pytest.raises(CommandError, match="HOST:PORT"):
        call_command("smtp_relay", "--listen", "2587")
