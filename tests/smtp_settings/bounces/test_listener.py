"""The relay as the bounce listener: DSNs and complaint reports sent to a VERP address of a
server's bounce domain are taken from any client, without AUTH, and recorded before the 250;
everything else still needs AUTH or a trusted network."""

import contextlib
import logging
import re
import smtplib
import threading
import time

import pytest
from django.db import DatabaseError

from smtp_settings.bounces import dsn, verp
from smtp_settings.bounces.record import bounce_recorded
from smtp_settings.models import Bounce, OutboxMessage, Suppression
from tests.campaigns.test_sending import wait_for
from tests.smtp_settings.bounces.test_reports import CORPUS, EXPECTED, ORIGINAL, dsn_naming, expected_addresses, sent_to
from tests.smtp_settings.test_relay import LOOPBACK, PASSWORD, RawSession, auth, connect, make_credential, queued_id

pytestmark = pytest.mark.django_db(transaction=True)  # the relay writes from threads of its own

DOMAIN = "bounces.example.test"
HARD, SOFT, DELAYED, UNPARSED = "hard", "soft", "delayed", "unparsed"


@pytest.fixture
def listener(smtp_relay, make_server):
    """A relay that trusts no network (loopback is a stranger here), with a server entry
    whose bounce domain is DOMAIN."""
    make_server(bounce_domain=DOMAIN)
    return smtp_relay(trusted_networks=[])


def crlf(data: bytes) -> bytes:
    """Line endings as SMTP has them: some corpus files end their lines with LF alone."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def report_for(recipient: str = "gone@example.net", reference: str = "o7", **options) -> bytes:
    return dsn.notification(ORIGINAL, recipient, to=verp.address(reference, DOMAIN), **options)


def deliver(port: int, data: bytes, to: str, mail_from: str = "") -> tuple[int, bytes]:
    """Deliver a report as a reporting server does, from the null sender, without AUTH: the reply
    to its final dot (or the refusal of its recipient)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail(mail_from)[0] == 250
        if (refused := smtp.rcpt(to))[0] != 250:
            return refused
        return smtp.data(data)


def recorded(reply: tuple[int, bytes]) -> list[Bounce]:
    code, text = reply
    assert code == 250, reply
    first = int(re.fullmatch(rb"2\.0\.0 Ok: recorded as bounce (\d+)(?: and \d+ more)?", text)[1])
    return list(Bounce.objects.filter(pk__gte=first).order_by("pk"))


def addresses(bounces: list[Bounce], *kinds: str) -> list[str]:
    return sorted(bounce.email for bounce in bounces if bounce.kind in kinds)


# -- what it takes --


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_bounce_sent_by_a_stranger_is_recorded_for_the_delivery_of_its_verp_address(listener, name):
    """Each report goes to the VERP address of the message sent to the addresses it reports."""
    expected = EXPECTED[name]
    reference = sent_to(*expected_addresses(name))
    to = verp.address(reference, "Bounces.Example.TEST")  # the domain's case does not matter

    bounces = recorded(deliver(listener.port, crlf((CORPUS / name).read_bytes()), to))

    assert addresses(bounces, HARD, SOFT) == sorted(map(str.lower, expected.get("permanent", [])))
    assert addresses(bounces, DELAYED) == sorted(map(str.lower, expected.get("temporary", [])))
    if not expected.get("permanent") and not expected.get("temporary"):
        assert [bounce.kind for bounce in bounces] == [UNPARSED]
    else:
        assert {bounce.acted_on for bounce in bounces} == {True}
    assert {(bounce.reference, bounce.source) for bounce in bounces} == {(reference, "listener")}
    assert bytes(bounces[0].report) == crlf((CORPUS / name).read_bytes())
    assert set(Suppression.objects.values_list("email", flat=True)) == set(addresses(bounces, HARD))


def test_a_strangers_report_naming_people_its_message_did_not_go_to_is_kept_and_acts_on_nothing(listener):
    """Whoever received one message holds its VERP address: it lets them report on that
    message's recipients, and on nobody else."""
    mine = sent_to("me@example.net")
    report = dsn_naming("ceo@example.net", "cfo@example.net", reference=mine)

    [bounce] = recorded(deliver(listener.port, report, verp.address(mine, DOMAIN)))

    assert (bounce.kind, bounce.email, bounce.reference, bounce.acted_on) == (HARD, "ceo@example.net", mine, False)
    assert bounce.problem == (
        "It names ceo@example.net, cfo@example.net, which its delivery did not go to: kept, not acted on."
    )
    assert bytes(bounce.report) == report
    assert not Suppression.objects.exists()


def test_a_report_nobody_understands_is_kept_and_answered_250(listener):
    data = crlf((CORPUS / "dumbass_01.txt").read_bytes())
    [bounce] = recorded(deliver(listener.port, data, verp.address("d9", DOMAIN)))
    assert (bounce.kind, bounce.email, bounce.reference, bytes(bounce.report)) == (UNPARSED, "", "d9", data)
    assert not Suppression.objects.exists()


def test_a_dsn_suppresses_its_address_and_a_complaint_report_from_a_named_sender_is_taken_too(listener):
    gone = sent_to("gone@example.net")
    [hard] = recorded(deliver(listener.port, report_for("gone@example.net", gone), verp.address(gone, DOMAIN)))
    assert (hard.kind, hard.email, hard.status, hard.reference) == (HARD, "gone@example.net", "5.1.1", gone)
    assert Suppression.objects.get().email == "gone@example.net"

    complaint = (
        b"From: abuse@isp.example\r\nTo: x\r\nSubject: FBL\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: <angry@example.net>\r\n\r\n"
        b"--b--\r\n"
    )
    angry = sent_to("angry@example.net")
    reply = deliver(listener.port, complaint, verp.address(angry, DOMAIN), mail_from="fbl@isp.example")
    [bounce] = recorded(reply)
    assert (bounce.kind, bounce.email, bounce.reference) == ("complaint", "angry@example.net", angry)
    assert Suppression.objects.get(email="angry@example.net").reason == "complaint"


def test_one_line_is_logged_for_each_report(listener, caplog):
    caplog.set_level(logging.INFO, logger="smtp_settings.relay")
    recorded(deliver(listener.port, report_for(), verp.address("o7", DOMAIN)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Relay: a bounce report")]
    assert len(lines) == 1
    assert re.fullmatch(r"Relay: a bounce report of \d+ bytes from 127\.0\.0\.1 for o7: 1 hard", lines[0])


# -- what it refuses --


@pytest.mark.parametrize(
    "to",
    [
        verp.address("o7", DOMAIN).replace("+o7-", "+o8-"),  # the signature of another delivery
        re.sub(r"-[0-9a-f]{16}@", "-0123456789abcdef@", verp.address("o7", DOMAIN)),  # a forged signature
        verp.address("o8", "elsewhere.example.test"),  # a good token, for a domain no server bounces to
        f"bounces+o7@{DOMAIN}",
        f"bounces+@{DOMAIN}",
        f"BOUNCES+zz-{'0' * 16}@{DOMAIN}",
    ],
    ids=["another-signature", "forged", "unknown-domain", "no-signature", "empty", "garbage"],
)
def test_a_bounce_address_that_is_not_ours_gets_550_and_nothing_is_stored(listener, to):
    assert deliver(listener.port, report_for(), to) == (550, b"5.1.1 No such bounce address")
    assert not Bounce.objects.exists()


def test_a_stranger_still_gets_530_for_any_other_recipient_even_beside_a_bounce_address(listener):
    with connect(listener) as smtp:
        smtp.ehlo()
        assert smtp.mail("")[0] == 250
        assert smtp.rcpt("reader@example.test") == (530, b"5.7.0 Authentication required")
        assert smtp.rcpt(verp.address("o7", DOMAIN))[0] == 250
        assert smtp.rcpt("reader@example.test") == (530, b"5.7.0 Authentication required")
        assert smtp.rcpt(f"bounces+reader@{DOMAIN}.evil.test")[0] == 550  # looks like one: not relayed
        recorded(smtp.data(report_for()))
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize("bounce_first", [True, False])
def test_a_client_that_may_relay_cannot_mix_bounce_and_other_recipients(smtp_relay, make_server, bounce_first):
    make_server(bounce_domain=DOMAIN)
    relay = smtp_relay(trusted_networks=LOOPBACK)
    recipients = [verp.address("o7", DOMAIN), "reader@example.test"]
    with connect(relay) as smtp:
        smtp.ehlo()
        smtp.mail("app@example.test")
        first, second = recipients if bounce_first else recipients[::-1]
        assert smtp.rcpt(first)[0] == 250
        code, text = smtp.rcpt(second)
        assert code == 550 and text.startswith(b"5.5.1 A bounce report goes to bounce addresses only")
        smtp.data(report_for() if bounce_first else b"Subject: hi\r\n\r\nhi\r\n")
    assert (Bounce.objects.count(), OutboxMessage.objects.count()) == ((1, 0) if bounce_first else (0, 1))


def test_an_authenticated_client_still_relays_to_a_bounces_address_of_another_domain(smtp_relay, make_server):
    make_server(bounce_domain=DOMAIN)
    make_credential("app")
    relay = smtp_relay(trusted_networks=[])
    with connect(relay) as smtp:
        auth(smtp, "app", PASSWORD)
        smtp.mail("app@example.test")
        assert smtp.rcpt("bounces+someone@example.net")[0] == 250
        pk = queued_id(smtp.data(b"Subject: hi\r\n\r\nhi\r\n"))
    assert OutboxMessage.objects.get(pk=pk).recipients == ["bounces+someone@example.net"]
    assert not Bounce.objects.exists()


def test_a_report_over_the_size_limit_gets_552_and_a_smaller_one_still_goes(listener, settings):
    settings.RELAY_MAX_MESSAGE_BYTES = 10_000
    huge = report_for() + (b"y" * 998 + b"\r\n") * 10  # an epilogue of 10 KB
    to = verp.address("o7", DOMAIN)
    with connect(listener) as smtp:
        smtp.ehlo()
        assert smtp.mail("", ["SIZE=10001"])[0] == 552
        smtp.mail("")
        smtp.rcpt(to)
        assert smtp.data(huge)[0] == 552
        smtp.mail("")
        smtp.rcpt(to)
        recorded(smtp.data(report_for()))
    assert Bounce.objects.count() == 1


def test_a_report_that_cannot_be_recorded_gets_451_and_nothing_of_it_is_kept(listener):
    """Its findings are recorded together or not at all: the reporting server sends it again."""
    two_addresses = report_for("second@example.net").replace(
        b"Final-Recipient: rfc822; second@example.net",
        b"Final-Recipient: rfc822; first@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"Final-Recipient: rfc822; second@example.net",
    )

    def fails_on_the_second(bounce, **kwargs):  # as a receiver of the signal might, on a database error
        if bounce.email == "second@example.net":
            raise DatabaseError("the database went away")

    to = verp.address(sent_to("first@example.net", "second@example.net"), DOMAIN)
    bounce_recorded.connect(fails_on_the_second)
    try:
        failed = deliver(listener.port, two_addresses, to)
    finally:
        bounce_recorded.disconnect(fails_on_the_second)
    assert failed == (451, b"4.3.0 The report could not be recorded; please try again later")
    assert not Bounce.objects.exists() and not Suppression.objects.exists()

    bounces = recorded(deliver(listener.port, two_addresses, to))  # the retry
    assert addresses(bounces, HARD) == ["first@example.net", "second@example.net"]


def test_a_client_sending_one_byte_a_second_is_cut_off_and_others_are_not_held_up(listener, settings):
    settings.RELAY_TIMEOUT_S = 2  # for DATA, all of it
    slow = RawSession(listener.port)
    try:
        assert slow.command(b"MAIL FROM:<>") == 250
        assert slow.command(f"RCPT TO:<{verp.address('o1', DOMAIN)}>".encode()) == 250
        assert slow.command(b"DATA") == 354
        started = time.monotonic()

        def dribble() -> None:
            with contextlib.suppress(OSError):  # until the relay hangs up
                for byte in report_for(reference="o1"):
                    slow.sock.sendall(bytes([byte]))
                    time.sleep(1)

        threading.Thread(target=dribble, daemon=True).start()
        recorded(deliver(listener.port, report_for(reference="o2"), verp.address("o2", DOMAIN)))
        assert time.monotonic() - started < 1.5  # meanwhile

        with contextlib.suppress(ConnectionResetError):  # else hung up on, without a reply:
            assert slow.replies.readline() == b""
        assert 2 <= time.monotonic() - started < 5
    finally:
        slow.close()
    assert list(Bounce.objects.values_list("reference", flat=True)) == ["o2"]


def test_a_reporting_server_slower_than_the_login_timeout_is_heard_out(listener, settings):
    """A large DSN may take a reporting server longer than RELAY_LOGIN_TIMEOUT_S to send: once
    a bounce address is accepted, no login is waited for (RELAY_TIMEOUT_S still bounds it)."""
    settings.RELAY_LOGIN_TIMEOUT_S = 1
    gone = sent_to("gone@example.net")
    report = report_for(reference=gone)
    assert report.endswith(b"\r\n") and b"\r\n." not in report  # sent as it is, no dot to stuff
    slow, idle = RawSession(listener.port), RawSession(listener.port)
    try:
        assert slow.command(b"MAIL FROM:<>") == 250
        assert slow.command(f"RCPT TO:<{verp.address(gone, DOMAIN)}>".encode()) == 250
        assert slow.command(b"DATA") == 354
        started = time.monotonic()
        for start in range(0, len(report), len(report) // 6 + 1):  # in six pieces over three seconds
            slow.sock.sendall(report[start : start + len(report) // 6 + 1])
            time.sleep(0.5)
        slow.sock.sendall(b".\r\n")

        assert slow.reply() == 250
        assert time.monotonic() - started > 2.5
        assert idle.replies.readline() == b"421 4.7.0 No login in time; closing the connection\r\n"
    finally:
        slow.close()
        idle.close()
    [bounce] = Bounce.objects.all()
    assert (bounce.email, bounce.reference, bounce.acted_on) == ("gone@example.net", gone, True)


# -- a real `manage.py smtp_relay` --


def test_the_relay_process_takes_every_real_bounce_from_a_stranger(relay_process, make_server):
    make_server(bounce_domain=DOMAIN)
    _, port = relay_process(RELAY_TRUSTED_NETWORKS="")
    references = {name: sent_to(*expected_addresses(name)) for name in sorted(EXPECTED)}
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for name, reference in references.items():
            assert smtp.sendmail("", [verp.address(reference, DOMAIN)], crlf((CORPUS / name).read_bytes())) == {}
    for name, reference in references.items():
        bounces = list(Bounce.objects.filter(reference=reference))
        expected = EXPECTED[name]
        assert addresses(bounces, HARD, SOFT) == sorted(map(str.lower, expected.get("permanent", []))), name
        assert addresses(bounces, DELAYED) == sorted(map(str.lower, expected.get("temporary", []))), name
        assert bounces and all(bounce.acted_on for bounce in bounces if bounce.kind != UNPARSED), name


def test_sigkill_right_after_the_250_of_a_report_loses_nothing(relay_process, make_server):
    make_server(bounce_domain=DOMAIN)
    relay, port = relay_process(RELAY_TRUSTED_NETWORKS="")
    gone = sent_to("gone@example.net")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("")
        smtp.rcpt(verp.address(gone, DOMAIN))
        reply = smtp.data(report_for(reference=gone))
        relay.kill()  # SIGKILL, the moment the 250 is read
        relay.wait()
    [bounce] = recorded(reply)
    assert (bounce.kind, bounce.email, bounce.reference) == (HARD, "gone@example.net", gone)
    assert Suppression.objects.filter(email="gone@example.net").exists()


# -- the sandbox's DSNs, end to end --

RECIPIENTS = ["a@gone.example.test", "b@example.test", "C@Gone.Example.Test", "d@gone.example.test.evil"]


def send_to_sandbox(port: int, reference: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail(verp.address(reference, DOMAIN), RECIPIENTS, ORIGINAL)


def bounced() -> list[tuple[str, str, str, str]]:
    return sorted(Bounce.objects.values_list("kind", "email", "status", "reference"))


def test_the_sandbox_bounces_exactly_the_matching_recipients_to_the_listener(listener, smtp_sandbox):
    sandbox = smtp_sandbox(bounce="*@gone.example.test", bounce_to=("127.0.0.1", listener.port))

    reference = sent_to(*RECIPIENTS)
    send_to_sandbox(sandbox.port, reference)
    with smtplib.SMTP("127.0.0.1", sandbox.port, timeout=30) as smtp:  # a bounce is never bounced
        smtp.sendmail("", ["e@gone.example.test"], ORIGINAL)

    wait_for(lambda: sandbox.summary()["bounces_sent"] == 2, 10, "the sandbox's DSNs")
    assert len(sandbox.received) == 2  # it accepted everything first
    assert bounced() == [
        (HARD, "a@gone.example.test", "5.1.1", reference),
        (HARD, "c@gone.example.test", "5.1.1", reference),
    ]
    assert sorted(Suppression.objects.values_list("email", "reason")) == [
        ("a@gone.example.test", "hard_bounce"),
        ("c@gone.example.test", "hard_bounce"),
    ]


def test_a_dsn_the_sandbox_cannot_deliver_is_counted_and_the_sandbox_goes_on(smtp_sandbox, closed_port):
    sandbox = smtp_sandbox(bounce="*", bounce_to=("127.0.0.1", closed_port))
    send_to_sandbox(sandbox.port, "d1")
    wait_for(lambda: sandbox.summary()["bounces_failed"] == len(RECIPIENTS), 10, "the failed DSNs")
    send_to_sandbox(sandbox.port, "d2")
    assert len(sandbox.received) == 2


def test_the_sandbox_command_bounces_to_the_listener(listener, sandbox_process):
    sandbox = sandbox_process("--bounce", "*@gone.example.test", "--bounce-to", f"127.0.0.1:{listener.port}")
    reference = sent_to(*RECIPIENTS)

    send_to_sandbox(sandbox.port, reference)

    wait_for(lambda: Bounce.objects.count() == 2, 10, "the bounces recorded")
    assert bounced() == [
        (HARD, "a@gone.example.test", "5.1.1", reference),
        (HARD, "c@gone.example.test", "5.1.1", reference),
    ]
    summary = sandbox.stop()
    assert (summary["received"], summary["bounces_sent"], summary["bounces_failed"]) == (1, 2, 0)
    assert sorted(Suppression.objects.values_list("email", flat=True)) == ["a@gone.example.test", "c@gone.example.test"]
