"""Reading bounce and complaint reports: real bounces from many MTAs (flufl.bounce's corpus),
RFC 3464 DSNs, ARF complaints, and reports nobody can read, which are kept."""

import json
from pathlib import Path

import pytest

from smtp_settings.bounces import dsn, intake, verp
from smtp_settings.models import Bounce, Suppression

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).resolve().parents[2] / "data" / "bounces"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
HARD, SOFT, COMPLAINT, DELAYED, UNPARSED = "hard", "soft", "complaint", "delayed", "unparsed"
ORIGINAL = b"From: News <news@example.test>\r\nTo: reader@example.net\r\nSubject: Hello\r\n\r\nHi\r\n"


def take(data: bytes, *envelope_recipients: str) -> list[Bounce]:
    return intake.take(data, Bounce.Source.MAILBOX, envelope_recipients)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_bounce_names_the_addresses_it_reports(name):
    expected = EXPECTED[name]
    bounces = take((CORPUS / name).read_bytes())
    failed = sorted(b.email for b in bounces if b.kind in (HARD, SOFT))
    delayed = sorted(b.email for b in bounces if b.kind == DELAYED)
    assert failed == sorted(map(str.lower, expected.get("permanent", [])))
    assert delayed == sorted(map(str.lower, expected.get("temporary", [])))
    if not failed and not delayed:
        assert [b.kind for b in bounces] == [UNPARSED]


def test_a_message_no_detector_understands_is_kept_with_why():
    data = (CORPUS / "dumbass_01.txt").read_bytes()
    [bounce] = take(data)
    assert (bounce.kind, bounce.email, bytes(bounce.report)) == (UNPARSED, "", data)
    assert bounce.problem == "No bounced or complaining address found in it."
    assert not Suppression.objects.exists()


def dsn_for(recipient="gone@example.net", status="5.1.1", diagnostic="550 5.1.1 user unknown", reference="d7"):
    return dsn.notification(
        ORIGINAL, recipient, to=verp.address(reference, "b.example.test"), status=status, diagnostic=diagnostic
    )


def test_a_dsn_for_an_unknown_user_is_a_hard_bounce_for_its_delivery():
    [bounce] = take(dsn_for())
    assert (bounce.kind, bounce.email, bounce.status, bounce.code, bounce.text, bounce.reference) == (
        HARD,
        "gone@example.net",
        "5.1.1",
        550,
        "550 5.1.1 user unknown",
        "d7",
    )
    assert Suppression.objects.get().reason == "hard_bounce"


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


def test_the_envelope_recipient_names_the_delivery_first():
    [bounce] = take(dsn_for(reference="d7"), verp.address("d8", "b.example.test"))
    assert bounce.reference == "d8"


def test_a_forged_verp_token_names_no_delivery():
    forged = dsn_for().replace(b"bounces+d7-", b"bounces+d9-")
    [bounce] = take(forged)
    assert (bounce.reference, bounce.email, bounce.kind) == ("", "gone@example.net", HARD)


def arf(original_rcpt_to: str | None = "reader@example.net", feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 complaint about ORIGINAL, which went out with the VERP sender of "d7"."""
    fields = f"Feedback-Type: {feedback_type}\r\nUser-Agent: Provider/1.0\r\nVersion: 1\r\n"
    fields += f"Original-Mail-From: <{verp.address('d7', 'b.example.test')}>\r\n"
    if original_rcpt_to:
        fields += f"Original-Rcpt-To: <{original_rcpt_to}>\r\n"
    return (
        b"From: feedback@mailbox-provider.example\r\nTo: abuse@example.test\r\nSubject: Complaint\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\n" + fields.encode() + b"\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + ORIGINAL + b"\r\n--b--\r\n"
    )


def test_an_arf_report_is_a_complaint_about_its_delivery():
    [bounce] = take(arf())
    assert (bounce.kind, bounce.email, bounce.reference, bounce.text) == (
        COMPLAINT,
        "reader@example.net",
        "d7",
        "Feedback-Type: abuse",
    )
    assert Suppression.objects.get().reason == "complaint"


def test_a_redacted_arf_report_still_names_the_returned_messages_recipient():
    [bounce] = take(arf(original_rcpt_to=None))
    assert (bounce.kind, bounce.email) == (COMPLAINT, "reader@example.net")


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
