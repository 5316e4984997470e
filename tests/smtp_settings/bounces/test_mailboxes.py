"""Reading bounce mailboxes: real bounces from many MTAs put in a real Dovecot mailbox, read
over IMAP and POP3 with TLS, each recorded exactly once (through crashes and concurrent
checks), and servers that fail, lie or misbehave, which cost a bounded time and record nothing."""

import itertools
import logging
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
from django.db import connection

from smtp_settings.bounces import mailboxes, verp
from smtp_settings.bounces.mailboxes import check, probe, schedule_checks
from smtp_settings.bounces.record import bounce_recorded
from smtp_settings.models import Bounce, BounceMailbox, MailboxReport, Suppression
from tests.campaigns.test_sending import wait_for
from tests.conftest import ROOT, _worker_env
from tests.dovecot import Dovecot
from tests.hostile import endless
from tests.smtp_settings.bounces.test_reports import CORPUS, EXPECTED, dsn_for, dsn_naming, expected_addresses, sent_to

pytestmark = pytest.mark.django_db

# Dovecot's port: the mailbox's protocol and TLS.
PORTS = {
    "imaps": ("imap", "ssl"),
    "imap": ("imap", "starttls"),
    "pop3s": ("pop3", "ssl"),
    "pop3": ("pop3", "starttls"),
}
HARD, SOFT, DELAYED, UNPARSED = "hard", "soft", "delayed", "unparsed"


@pytest.fixture
def mailbox_on(dovecot, make_mailbox, trust_test_ca):
    """A mailbox reading Dovecot through one of its ports (see PORTS), whose certificate is trusted."""

    def make(port: str, **overrides) -> BounceMailbox:
        protocol, tls = PORTS[port]
        return make_mailbox(protocol=protocol, tls=tls, port=dovecot.ports[port], **overrides)

    return make


def same_text(data: bytes) -> bytes:
    """A message as any server may give it back: line ends as CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def delivered_to(reference: str, report: bytes) -> bytes:
    """A report as the MTA's local delivery leaves it in the mailbox, with the VERP address it
    was sent to in Delivered-To."""
    return f"Delivered-To: {verp.address(reference, 'bounces.example.test')}\n".encode() + report


def samples() -> tuple[dict[str, bytes], dict[str, str]]:
    """Every report of the corpus, each delivered to the VERP address of the message sent to
    the addresses it reports; one that flufl.bounce cannot read; a DSN whose returned headers
    carry the VERP address; a stranger's report naming people its message did not go to; and
    a report without a VERP address (a server without a bounce domain). Then each one's
    reference."""
    references = {name: sent_to(*expected_addresses(name)) for name in EXPECTED}
    reports = {name: delivered_to(references[name], (CORPUS / name).read_bytes()) for name in EXPECTED}
    references |= {"verp": sent_to("gone@example.net"), "stranger": sent_to("me@example.net"), "no token": ""}
    return reports | {
        "dumbass_01.txt": (CORPUS / "dumbass_01.txt").read_bytes(),
        "verp": dsn_for(recipient="gone@example.net", reference=references["verp"]),
        "stranger": dsn_naming("ceo@example.net", reference=references["stranger"]),
        "no token": (CORPUS / "postfix_01.txt").read_bytes(),
    }, references


def bounces_by_sample(reports: dict[str, bytes]) -> dict[str, list[Bounce]]:
    """The bounces recorded for each report: the first keeps the report, the others point at it."""
    name_of = {same_text(data): name for name, data in reports.items()}
    found, sample_of = defaultdict(list), {}
    for bounce in Bounce.objects.order_by("pk"):
        kept = bounce.report_of_id
        sample_of[bounce.pk] = sample_of[kept] if kept else name_of[same_text(bytes(bounce.report))]
        found[sample_of[bounce.pk]].append(bounce)
    return found


def reports_for(*emails: str) -> list[bytes]:
    """A DSN for each address, about the message sent to it."""
    return [dsn_for(recipient=email) for email in emails]


@pytest.mark.parametrize("port", list(PORTS))
def test_one_check_reads_every_report_once_and_each_maps_to_its_delivery(port, dovecot, mailbox_on):
    reports, references = samples()
    dovecot.deliver(*reports.values())
    mailbox = mailbox_on(port)

    result = check(mailbox)

    assert (result.taken, result.again, result.left, result.error) == (len(reports), 0, 0, "")
    found = bounces_by_sample(reports)
    assert sorted(found) == sorted(reports)  # every one kept, the unreadable too
    for name, expected in EXPECTED.items():
        bounces = found[name]
        assert sorted(b.email for b in bounces if b.kind in (HARD, SOFT)) == sorted(
            map(str.lower, expected.get("permanent", []))
        ), name
        assert sorted(b.email for b in bounces if b.kind == DELAYED) == sorted(
            map(str.lower, expected.get("temporary", []))
        ), name
        assert {b.reference for b in bounces} == {references[name]}, name
        assert all(b.acted_on for b in bounces if b.kind != UNPARSED), name
    [dsn] = found["verp"]
    assert (dsn.kind, dsn.email, dsn.reference, dsn.acted_on) == (HARD, "gone@example.net", references["verp"], True)
    [unread] = found["dumbass_01.txt"]
    assert (unread.kind, unread.email) == (UNPARSED, "")
    [stranger] = found["stranger"]
    assert (stranger.email, stranger.reference, stranger.acted_on) == ("ceo@example.net", references["stranger"], False)
    [no_token] = found["no token"]
    assert (no_token.kind, no_token.email, no_token.reference, no_token.acted_on) == (
        HARD,
        "xxxxx@local.ie",
        "",
        False,
    )
    assert no_token.problem == "No VERP token names its delivery: kept, not acted on."
    hard = {b.email for b in Bounce.objects.filter(kind=HARD, acted_on=True)}
    assert set(Suppression.objects.values_list("email", flat=True)) == hard
    assert {(b.source, b.mailbox_id) for b in Bounce.objects.all()} == {("mailbox", mailbox.pk)}
    mailbox.refresh_from_db()
    assert (mailbox.last_count, mailbox.last_error) == (len(reports), "")
    assert mailbox.last_checked_at is not None
    # IMAP leaves them, read; POP3 deletes them.
    assert dovecot.count() == ((len(reports), 0) if port.startswith("imap") else (0, 0))

    recorded = Bounce.objects.count()
    again = check(mailbox)
    assert (again.taken, again.again, again.error) == (0, 0, "")
    assert Bounce.objects.count() == recorded


@pytest.mark.parametrize("port", ["imaps", "pop3s"])
def test_a_wrong_password_fails_the_check_without_reading_or_saying_it(port, dovecot, mailbox_on, caplog):
    dovecot.deliver(*reports_for("gone@example.net"))
    mailbox = mailbox_on(port, password="not-the-password-9")

    with caplog.at_level(logging.WARNING):
        result = check(mailbox)

    assert result.error.startswith("Authentication failed: ")
    assert "uthentication failed" in result.error[len("Authentication failed: ") :]  # Dovecot's own words
    mailbox.refresh_from_db()
    assert mailbox.last_error == result.error and mailbox.last_count == 0
    assert "not-the-password-9" not in result.error + caplog.text
    assert not Bounce.objects.exists()
    assert dovecot.count() == (1, 1)


@pytest.mark.parametrize("port", list(PORTS))
def test_a_certificate_nobody_vouches_for_is_refused_unless_told_to_skip_verification(
    port, dovecot, make_mailbox, certificates
):
    dovecot.deliver(*reports_for("gone@example.net"))
    protocol, tls = PORTS[port]
    mailbox = make_mailbox(protocol=protocol, tls=tls, port=dovecot.ports[port])

    refused = check(mailbox)

    assert refused.error.startswith("The server's certificate is not trusted (unable to get local issuer certificate)")
    assert not Bounce.objects.exists()
    mailbox.tls_skip_verify = True
    mailbox.save()
    assert (check(mailbox).taken, Bounce.objects.count()) == (1, 1)


@pytest.mark.parametrize("port", ["imaps", "pop3s"])
def test_a_report_too_large_is_kept_cut_as_not_understood(port, dovecot, mailbox_on, settings):
    settings.BOUNCE_REPORT_MAX_BYTES = 4096
    report = same_text(reports_for("gone@example.net")[0]) + (b"X" * 76 + b"\r\n") * 300
    dovecot.deliver(report)

    assert check(mailbox_on(port)).taken == 1

    [bounce] = Bounce.objects.all()
    assert (bounce.kind, bytes(bounce.report), bounce.report_size) == (UNPARSED, report[:4096], len(report))
    assert bounce.problem == f"The message is {len(report):,} bytes; only its first 4,096 were read."
    assert dovecot.count() == ((1, 0) if port == "imaps" else (0, 0))


@pytest.mark.parametrize("port", ["imaps", "pop3s"])
def test_a_check_reads_at_most_its_share_and_leaves_the_rest_for_the_next(port, dovecot, mailbox_on, settings):
    settings.BOUNCE_MAILBOX_MAX_MESSAGES = 2
    dovecot.deliver(*reports_for("a@example.net", "b@example.net", "c@example.net"))
    mailbox = mailbox_on(port)

    first = check(mailbox)
    second = check(mailbox)

    assert [(first.taken, first.left), (second.taken, second.left)] == [(2, 1), (1, 0)]
    assert sorted(Bounce.objects.values_list("email", flat=True)) == ["a@example.net", "b@example.net", "c@example.net"]


def test_a_report_someone_read_in_the_mailbox_is_still_taken_once(dovecot, mailbox_on):
    dovecot.deliver(*reports_for("a@example.net", "b@example.net"))
    with dovecot.imap() as person:  # a person opens the mailbox and reads everything
        person.select("INBOX")
        assert person.store("1:*", "+FLAGS", r"(\Seen)")[0] == "OK"
    mailbox = mailbox_on("imaps")

    first, second = check(mailbox), check(mailbox)

    assert (first.taken, second.taken, second.again) == (2, 0, 0)
    assert sorted(Bounce.objects.values_list("email", flat=True)) == ["a@example.net", "b@example.net"]


def test_pop3_reads_in_sessions_of_a_few_messages_each_deleted_at_its_quit(dovecot, mailbox_on, monkeypatch):
    monkeypatch.setattr(mailboxes, "POP3_BATCH", 2)
    dovecot.deliver(*reports_for("a@example.net", "b@example.net", "c@example.net", "d@example.net", "e@example.net"))

    result = check(mailbox_on("pop3s"))

    assert (result.taken, result.left) == (5, 0)
    assert dovecot.count() == (0, 0)
    assert Bounce.objects.count() == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("port", ["imaps", "pop3s"])
def test_a_check_killed_between_recording_a_report_and_marking_it_records_it_once(port, dovecot, mailbox_on):
    """The process dies right after a report's bounces commit, before IMAP's \\Seen or POP3's
    DELE and QUIT: the next check reads the message again and only marks it."""
    dovecot.deliver(*reports_for("a@example.net", "b@example.net", "c@example.net"))
    mailbox = mailbox_on(port)
    script = (
        "import os, signal, django; django.setup()\n"
        "from django.db import transaction\n"
        "from smtp_settings.bounces.mailboxes import check\n"
        "from smtp_settings.bounces.record import bounce_recorded\n"
        "from smtp_settings.models import BounceMailbox\n"
        "kill = lambda: os.kill(os.getpid(), signal.SIGKILL)\n"
        "bounce_recorded.connect(lambda sender, **kwargs: transaction.on_commit(kill), weak=False)\n"
        f"check(BounceMailbox.objects.get(pk={mailbox.pk}))\n"
    )

    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_worker_env(), timeout=60)

    assert killed.returncode == -9
    assert list(Bounce.objects.values_list("email", flat=True)) == ["a@example.net"]
    assert dovecot.count()[0] == 3  # not deleted (RETR counts as reading, for Dovecot)
    if port == "imaps":
        assert dovecot.count()[1] == 3  # not marked
    result = check(mailbox)
    assert (result.taken, result.again, result.error) == (2, 1, "")
    assert sorted(Bounce.objects.values_list("email", flat=True)) == ["a@example.net", "b@example.net", "c@example.net"]
    assert dovecot.count() == ((3, 0) if port == "imaps" else (0, 0))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("port", ["imaps", "pop3s"])
def test_two_checks_at_once_record_each_report_once(port, dovecot, mailbox_on):
    emails = [f"gone{n}@example.net" for n in range(20)]
    dovecot.deliver(*reports_for(*emails))
    mailbox = mailbox_on(port)
    results = []

    def slowly(sender, **kwargs):  # each take holds its transaction a while: the checks overlap
        time.sleep(0.02)

    def run():
        try:
            results.append(check(BounceMailbox.objects.get(pk=mailbox.pk)))
        finally:
            connection.close()

    bounce_recorded.connect(slowly, weak=False)
    try:
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        bounce_recorded.disconnect(slowly)

    assert [result.error for result in results] == ["", ""]
    assert sum(result.taken for result in results) == len(emails)
    assert sum(result.again for result in results) > 0  # they did read the same messages
    assert sorted(Bounce.objects.values_list("email", flat=True)) == sorted(emails)
    assert MailboxReport.objects.count() == len(emails)


@pytest.mark.parametrize("port", ["imaps", "pop3s"])
def test_a_connection_test_logs_in_and_counts_changing_nothing(port, dovecot, mailbox_on):
    dovecot.deliver(*reports_for("a@example.net", "b@example.net"))

    result = probe(mailbox_on(port))
    failed = probe(mailbox_on(port, password="not-the-password-9"))

    assert (result.ok, result.messages) == (True, 2)
    assert failed.error.startswith("Authentication failed: ")
    assert dovecot.count() == (2, 2)
    assert not Bounce.objects.exists()


# -- servers that misbehave: each check ends within its bounds, records nothing, says why --


def _never_ending_line():
    return itertools.chain([b"* OK "], itertools.repeat(b"A" * 4096))


def _endless_message():
    return itertools.chain([b"+OK here it comes\r\n"], itertools.repeat(b"AAAA\r\n" * 1000))


POP3_OK = {"USER": "+OK", "PASS": "+OK", "STAT": "+OK 1 100"}
HOSTILE = {
    "IMAP greeting without end of line": ("imap", {"banner": _never_ending_line}, "got more than 1000000 bytes"),
    "IMAP answer without end": ("imap", {"banner": endless("* OK AAAA")}, "answer ran past 75,536 bytes"),
    "IMAP literal of a gigabyte": (
        "imap",
        {"banner": "* OK ready", "unknown": "* 1 FETCH (BODY[] {999999999}"},
        "answer ran past 75,536 bytes",
    ),
    "IMAP server that never answers": ("imap", {"banner": lambda: iter(())}, "No answer within 1 s at connect."),
    "IMAP server trickling bytes": (
        "imap",
        {"banner": endless("* OK AAAA"), "byte_delay_s": 0.05},
        "The check ran out of its 3 s",
    ),
    "POP3 greeting without end of line": ("pop3", {"banner": _never_ending_line}, "line too long"),
    "POP3 server that never answers": ("pop3", {"banner": lambda: iter(())}, "No answer within 1 s at connect."),
    "POP3 message without end": (
        "pop3",
        {"banner": "+OK ready", "replies": POP3_OK | {"RETR": _endless_message}, "tls": True},
        "The check ran out of its 3 s at RETR",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_server_costs_a_bounded_time_and_records_nothing(
    case, hostile_smtp, make_mailbox, certificates, trust_test_ca, settings
):
    settings.BOUNCE_MAILBOX_TIMEOUT_S = 1
    settings.BOUNCE_MAILBOX_CHECK_S = 3
    settings.BOUNCE_REPORT_MAX_BYTES = 10_000
    protocol, behaviour, error = HOSTILE[case]
    behaviour = dict(behaviour)
    if behaviour.pop("tls", False):  # a TLS server: the misbehaviour comes after the login
        server, tls = hostile_smtp(**behaviour, tls=certificates.server_context()), "ssl"
    else:  # STARTTLS: the misbehaviour comes before the upgrade
        server, tls = hostile_smtp(**behaviour), "starttls"
    mailbox = make_mailbox(protocol=protocol, tls=tls, port=server.port)

    started = time.monotonic()
    result = check(mailbox)

    assert time.monotonic() - started < settings.BOUNCE_MAILBOX_CHECK_S + 2
    assert error in result.error
    assert len(result.error) <= 500
    assert (result.taken, Bounce.objects.count()) == (0, 0)
    mailbox.refresh_from_db()
    assert mailbox.last_error == result.error


def test_what_a_server_echoes_of_the_credentials_is_cut_out(hostile_smtp, make_mailbox, certificates, trust_test_ca):
    echo = f"-ERR no such login: {Dovecot.user} with {Dovecot.password}"
    server = hostile_smtp(banner="+OK ready", replies=POP3_OK | {"PASS": echo}, tls=certificates.server_context())
    mailbox = make_mailbox(protocol="pop3", tls="ssl", port=server.port)

    result = check(mailbox)

    assert result.error == "Authentication failed: -ERR no such login: [redacted] with [redacted]"


# -- the schedule --


@pytest.mark.django_db(transaction=True)
def test_every_enabled_mailbox_is_checked_by_a_worker(dovecot, mailbox_on, workers):
    dovecot.deliver(*reports_for("gone@example.net"))
    enabled = mailbox_on("imaps")
    disabled = mailbox_on("pop3s", enabled=False)

    schedule_checks()
    workers()

    checked = BounceMailbox.objects.filter(pk=enabled.pk, last_checked_at__isnull=False)
    wait_for(checked.exists, 60, "a worker checks the mailbox")
    assert list(Bounce.objects.values_list("email", "mailbox")) == [("gone@example.net", enabled.pk)]
    disabled.refresh_from_db()
    assert disabled.last_checked_at is None
