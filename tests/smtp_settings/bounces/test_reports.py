"""Reading bounce and complaint reports: real bounces from many MTAs (flufl.bounce's corpus),
RFC 3464 DSNs, ARF complaints, and reports nobody can read, which are kept."""

import json
import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from smtp_settings.bounces import dsn, intake, verp
from smtp_settings.models import Bounce, OutboxMessage, Suppression

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).resolve().parents[2] / "data" / "bounces"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
HARD, SOFT, COMPLAINT, DELAYED, UNPARSED = "hard", "soft", "complaint", "delayed", "unparsed"
ORIGINAL = b"From: News <news@example.test>\r\nTo: reader@example.net\r\nSubject: Hello\r\n\r\nHi\r\n"


def take(data: bytes, *envelope_recipients: str) -> list[Bounce]:
    return intake.read(data, envelope_recipients).record(Bounce.Source.MAILBOX)


def sent_to(*recipients: str) -> str:
    """The reference of an outbox message sent to these envelope recipients."""
    message = OutboxMessage.objects.create(
        source="relay", recipients=list(recipients), size=len(ORIGINAL), data=ORIGINAL, status="sent"
    )
    return f"o{message.pk}"


def expected_addresses(name: str) -> list[str]:
    """The addresses the corpus file `name` reports, failed or delayed."""
    return [*EXPECTED[name].get("permanent", []), *EXPECTED[name].get("temporary", [])]


def suppressed() -> dict[str, str]:
    return dict(Suppression.objects.values_list("email", "reason"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_bounce_acts_on_the_addresses_it_reports_for_the_message_sent_to_them(name):
    expected = EXPECTED[name]
    reference = sent_to(*expected_addresses(name))
    bounces = take((CORPUS / name).read_bytes(), verp.address(reference, "b.example.test"))
    failed = sorted(b.email for b in bounces if b.kind in (HARD, SOFT))
    delayed = sorted(b.email for b in bounces if b.kind == DELAYED)
    assert failed == sorted(map(str.lower, expected.get("permanent", [])))
    assert delayed == sorted(map(str.lower, expected.get("temporary", [])))
    if not failed and not delayed:
        assert [b.kind for b in bounces] == [UNPARSED]
    else:
        assert {(b.reference, b.acted_on, b.problem) for b in bounces} == {(reference, True, "")}
    assert set(suppressed()) == {b.email for b in bounces if b.kind == HARD}


def test_a_message_no_detector_understands_is_kept_with_why():
    data = (CORPUS / "dumbass_01.txt").read_bytes()
    [bounce] = take(data)
    assert (bounce.kind, bounce.email, bytes(bounce.report)) == (UNPARSED, "", data)
    assert bounce.problem == "No bounced or complaining address found in it."
    assert not Suppression.objects.exists()


def dsn_for(recipient="gone@example.net", status="5.1.1", diagnostic="550 5.1.1 user unknown", reference=None):
    """A DSN about `recipient`, sent to the VERP address of `reference` (default: a message to
    `recipient`)."""
    reference = reference or sent_to(recipient)
    return dsn.notification(
        ORIGINAL, recipient, to=verp.address(reference, "b.example.test"), status=status, diagnostic=diagnostic
    )


def dsn_naming(*recipients: str, reference: str) -> bytes:
    """A DSN sent to the VERP address of `reference`, reporting each of `recipients` as unknown."""
    blocks = b"".join(
        b"Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" % address.encode()
        for address in recipients[:-1]
    )
    return dsn_for(recipients[-1], reference=reference).replace(b"Final-Recipient:", blocks + b"Final-Recipient:", 1)


def test_a_dsn_for_an_unknown_user_is_a_hard_bounce_for_its_delivery():
    reference = sent_to("Gone@Example.NET")  # compared normalized
    report = dsn_for(reference=reference)
    [bounce] = take(report)
    assert (bounce.kind, bounce.email, bounce.status, bounce.code, bounce.text, bounce.reference) == (
        HARD,
        "gone@example.net",
        "5.1.1",
        550,
        "550 5.1.1 user unknown",
        reference,
    )
    assert (bounce.acted_on, bounce.problem, bytes(bounce.report)) == (True, "", report)
    assert suppressed() == {"gone@example.net": "hard_bounce"}


@pytest.mark.parametrize(
    "status, diagnostic, kind",
    [
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", HARD),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", HARD),
        ("5.2.1", "550 5.2.1 Mailbox temporarily rate limited", SOFT),
        ("5.2.2", "552 5.2.2 The recipient's inbox is out of storage space", SOFT),
        ("5.7.1", "554 5.7.1 Message rejected as spam", SOFT),
        ("4.4.7", "450 4.4.7 Message expired: no answer from the server", SOFT),
    ],
)
def test_a_failure_is_hard_only_when_it_is_about_the_address(status, diagnostic, kind):
    report = dsn_for(status=status, diagnostic=diagnostic)
    if status.startswith("4."):  # a DSN that gave up after 4xx: failed, with a 4.x.x status
        report = report.replace(b"Action: delayed", b"Action: failed")
    [bounce] = take(report)
    assert (bounce.kind, bounce.status) == (kind, status)


def test_a_delay_warning_is_kept_but_neither_counted_nor_suppressing(settings):
    settings.SOFT_BOUNCE_LIMIT = 1
    [bounce] = take(dsn_for(status="4.2.2", diagnostic="452 4.2.2 Mailbox full; still trying"))
    assert bounce.kind == DELAYED
    assert not Suppression.objects.exists()


# -- who a report may act on: the addresses its message went to --


def test_a_report_about_an_address_its_message_did_not_go_to_is_kept_once_and_acts_on_nothing():
    """Anyone who received one message holds its VERP address: a stranger's report sent to it,
    naming other people, must not suppress them."""
    mine = sent_to("me@example.net")
    victims = [f"victim{n}@example.net" for n in range(5)]

    report = dsn_naming(*victims, reference=mine)
    [bounce] = take(report)

    assert (bounce.kind, bounce.email, bounce.reference, bounce.acted_on) == (HARD, "victim0@example.net", mine, False)
    assert bounce.problem == (
        "It names victim0@example.net, victim1@example.net, victim2@example.net and 2 more, "
        "which its delivery did not go to: kept, not acted on."
    )
    assert bytes(bounce.report) == report
    assert not Suppression.objects.exists()


def test_a_report_with_no_valid_token_is_kept_once_and_acts_on_nothing():
    """A report in a mailbox of a server without a bounce domain, or with a forged token."""
    forged = dsn_naming("a@example.net", "b@example.net", reference=sent_to("a@example.net", "b@example.net"))
    forged = re.sub(rb"(bounces\+o[0-9]+-)[0-9a-f]{16}", rb"\g<1>0123456789abcdef", forged)

    [bounce] = take(forged)

    assert (bounce.kind, bounce.email, bounce.reference, bounce.acted_on) == (HARD, "a@example.net", "", False)
    assert bounce.problem == "No VERP token names its delivery: kept, not acted on."
    assert not Suppression.objects.exists()


def test_a_report_naming_its_recipient_and_others_acts_on_its_recipient_only_and_says_so():
    reference = sent_to("gone@example.net")

    [bounce] = take(dsn_naming("stranger@example.net", "gone@example.net", reference=reference))

    assert (bounce.email, bounce.reference, bounce.acted_on) == ("gone@example.net", reference, True)
    assert bounce.problem == "It also names stranger@example.net, which its delivery did not go to: not acted on."
    assert suppressed() == {"gone@example.net": "hard_bounce"}


def test_with_several_tokens_each_address_goes_to_the_message_that_went_to_it():
    first, second = sent_to("a@example.net"), sent_to("b@example.net", "c@example.net")
    report = dsn_naming("c@example.net", "a@example.net", reference=first)

    bounces = take(report, verp.address(second, "b.example.test"))  # the envelope's, and the one inside

    assert sorted((b.email, b.reference, b.acted_on) for b in bounces) == [
        ("a@example.net", first, True),
        ("c@example.net", second, True),
    ]
    assert set(suppressed()) == {"a@example.net", "c@example.net"}


@pytest.mark.parametrize("address", ["two words@example.net", "no-at-sign", "x@-.example", "x@example..net"])
def test_an_address_that_is_not_plausible_is_dropped_and_the_report_kept(address):
    reference = sent_to("gone@example.net", address)
    report = dsn_naming("gone@example.net", "x", reference=reference).replace(
        b"rfc822; x\r\n", b"rfc822; " + address.encode() + b"\r\n"
    )

    bounces = take(report)

    assert [(b.email, b.acted_on) for b in bounces] == [("gone@example.net", True)]
    assert bounces[0].problem == f"Not valid addresses, left out: '{address}'."
    assert suppressed() == {"gone@example.net": "hard_bounce"}


def test_an_address_garbled_in_the_report_is_the_recipient_of_a_message_to_one_else_acts_on_nothing():
    garbled = (CORPUS / "postfix_05.txt").read_bytes().replace(b"userx@example.net", b"userx\xff@example.net")
    to_several = sent_to("userx@example.net", "usery@example.net")

    [bounce] = take(garbled, verp.address(to_several, "b.example.test"))

    assert (bounce.kind, bounce.email, bounce.reference, bounce.acted_on) == (HARD, "", to_several, False)
    assert bounce.problem == "It names no valid address ('userx\ufffd@example.net'): kept, not acted on."
    assert not Suppression.objects.exists()

    to_one = sent_to("userx@example.net")
    [bounce] = take(garbled, verp.address(to_one, "b.example.test"))
    assert (bounce.email, bounce.reference, bounce.acted_on) == ("userx@example.net", to_one, True)
    assert suppressed() == {"userx@example.net": "hard_bounce"}


def test_one_report_writes_at_most_max_findings_and_keeps_its_report_once(django_assert_max_num_queries):
    recipients = [f"reader{n:03}@example.net" for n in range(intake.MAX_FINDINGS + 20)]
    reference = sent_to(*recipients)
    report = dsn_naming(*recipients, reference=reference)

    bounces = take(report)

    assert len(bounces) == intake.MAX_FINDINGS
    assert all(b.acted_on and b.reference == reference for b in bounces)
    first, *others = bounces
    assert (bytes(first.report), first.report_size, first.report_of) == (report, len(report), None)
    assert first.problem == f"Only the first {intake.MAX_FINDINGS} of its {len(recipients)} findings were recorded."
    assert {(bytes(b.report), b.report_size, b.report_of_id, b.problem) for b in others} == {(b"", 0, first.pk, "")}
    assert Suppression.objects.count() == intake.MAX_FINDINGS


def test_a_huge_report_from_a_stranger_is_read_first_then_written_as_one_row(settings):
    """5 MB of Final-Recipient blocks: read before the lock, then recorded as one bounce."""
    settings.BOUNCE_REPORT_MAX_BYTES = 10 * 1024 * 1024
    victims = [f"victim{n}@example.net" for n in range(60_000)]
    report = dsn_naming(*victims, reference=sent_to("me@example.net"))
    assert len(report) > 4_000_000

    reading = intake.read(report)
    with CaptureQueriesContext(connection) as writes:
        [bounce] = reading.record(Bounce.Source.LISTENER)

    assert bounce.problem.startswith("It names victim0@example.net, victim")
    assert bounce.problem.endswith(" and 59,997 more, which its delivery did not go to: kept, not acted on.")
    assert (bounce.acted_on, bounce.report_size) == (False, len(report))
    assert len(writes) <= 5  # a savepoint, the row, and nothing per address
    assert not Suppression.objects.exists()


def test_a_forged_verp_token_names_no_delivery():
    reference = sent_to("gone@example.net")
    forged = dsn_for(reference=reference).replace(f"bounces+{reference}-".encode(), b"bounces+o999999-")
    [bounce] = take(forged)
    assert (bounce.reference, bounce.email, bounce.kind, bounce.acted_on) == ("", "gone@example.net", HARD, False)


def test_a_report_about_a_message_not_known_here_acts_on_nothing():
    [bounce] = take(dsn_for(reference="d999999"))  # a delivery since deleted, or never made
    assert (bounce.reference, bounce.acted_on) == ("d999999", False)
    assert bounce.problem == "Its delivery (d999999) is not known here: kept, not acted on."


def arf(original_rcpt_to: str | None = "reader@example.net", reference: str = "", original: bytes = ORIGINAL) -> bytes:
    """An RFC 5965 complaint about `original`, which went out with the VERP sender of `reference`."""
    fields = "Feedback-Type: abuse\r\nUser-Agent: Provider/1.0\r\nVersion: 1\r\n"
    fields += f"Original-Mail-From: <{verp.address(reference, 'b.example.test')}>\r\n"
    if original_rcpt_to:
        fields += f"Original-Rcpt-To: <{original_rcpt_to}>\r\n"
    return (
        b"From: feedback@mailbox-provider.example\r\nTo: abuse@example.test\r\nSubject: Complaint\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\n" + fields.encode() + b"\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + original + b"\r\n--b--\r\n"
    )


def test_an_arf_report_is_a_complaint_about_its_delivery():
    reference = sent_to("reader@example.net")
    [bounce] = take(arf(reference=reference))
    assert (bounce.kind, bounce.email, bounce.reference, bounce.text, bounce.acted_on) == (
        COMPLAINT,
        "reader@example.net",
        reference,
        "Feedback-Type: abuse",
        True,
    )
    assert suppressed() == {"reader@example.net": "complaint"}


def test_a_redacted_arf_report_still_names_the_returned_messages_recipient():
    reference = sent_to("someone@example.net", "reader@example.net")
    [bounce] = take(arf(original_rcpt_to=None, reference=reference))
    assert (bounce.kind, bounce.email, bounce.acted_on) == (COMPLAINT, "reader@example.net", True)


@pytest.mark.parametrize("redacted_to", [b"To: redacted\r\n", b"To: undisclosed-recipients:;\r\n", b""])
def test_a_complaint_that_names_no_address_is_about_the_one_recipient_of_its_message(redacted_to):
    """Yahoo and Microsoft leave Original-Rcpt-To out and may redact the returned message."""
    original = ORIGINAL.replace(b"To: reader@example.net\r\n", redacted_to)
    reference = sent_to("Reader@Example.NET")

    [bounce] = take(arf(original_rcpt_to=None, reference=reference, original=original))

    assert (bounce.kind, bounce.email, bounce.reference, bounce.acted_on) == (
        COMPLAINT,
        "reader@example.net",
        reference,
        True,
    )
    assert suppressed() == {"reader@example.net": "complaint"}


def test_a_complaint_that_names_no_address_about_a_message_to_several_is_kept_and_acts_on_nothing():
    original = ORIGINAL.replace(b"To: reader@example.net\r\n", b"")
    reference = sent_to("a@example.net", "b@example.net")

    [bounce] = take(arf(original_rcpt_to=None, reference=reference, original=original))

    assert (bounce.kind, bounce.email, bounce.reference, bounce.acted_on) == (COMPLAINT, "", reference, False)
    assert bounce.problem == "It names no valid address (''): kept, not acted on."
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nbroken",
        "Subject: \u00e9t\u00e9\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\u00e9".encode(),
    ],
)
def test_a_malformed_report_is_kept_not_dropped(data):
    [bounce] = take(data)
    assert bounce.kind == UNPARSED and bytes(bounce.report) == data


def test_hostile_fields_are_stored_bounded_and_without_control_characters():
    diagnostic = "550 5.1.1 <b>x</b>\x07\x1b[31m" + "A" * 10_000
    [bounce] = take(dsn_for(diagnostic=diagnostic))
    assert bounce.text.startswith("550 5.1.1 <b>x</b> [31m") and len(bounce.text) <= 2000
    assert "\x07" not in bounce.text and "\x1b" not in bounce.text
