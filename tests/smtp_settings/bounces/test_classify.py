"""What a server's final reply to a recipient makes of it at send time, on real providers'
replies (as smtplib hands them over: the text after the code, lines joined by "\\n")."""

import pytest

from smtp_settings.bounces.classify import found_in, kind_of
from smtp_settings.events import enhanced_code
from smtp_settings.results import DEFERRED, FAILED, SENT, RecipientResult, SmtpResult

HARD, SOFT = "hard", "soft"

REPLIES = [
    # Unknown users and addresses: hard.
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "5.1.1 double-checking the recipient's email address for typos or\n"
        "5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
        HARD,
    ),
    (550, "5.1.1 <bob@example.test>: Recipient address rejected: User unknown in virtual mailbox table", HARD),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", HARD),
    (550, "5.1.0 <bob@example.test>... User unknown", HARD),
    (553, "5.1.3 The recipient address <bob@@example.test> is not a valid RFC 5321 address.", HARD),
    (550, "5.1.2 Host unknown (Name server: example.invalid: host not found)", HARD),
    (551, "5.1.6 Recipient no longer on server: bob@example.test", HARD),
    # About our own address, not the recipient's: a failure, not a bounce.
    (553, "5.1.8 <news@example.test>: Sender address rejected: Domain not found", None),
    (550, "5.1.7 The sender address is invalid", None),
    # 5.2.1 is a hard bounce only where the mailbox is disabled.
    (
        550,
        "5.2.1 The email account that you tried to reach is disabled. https://support.google.com/mail/?p=DisabledUser",
        HARD,
    ),
    (554, "5.2.1 This account has been disabled or discontinued [#102].", HARD),
    (550, "5.2.1 Mailbox disabled, not accepting messages", HARD),
    (550, "5.2.1 <bob@example.test>: ACCOUNT DISABLED", HARD),
    (
        550,
        "5.2.1 The user you are trying to contact is receiving mail at a rate that\n5.2.1 prevents additional messages",
        None,
    ),
    (550, "5.2.1 Mailbox unavailable", None),
    # A full mailbox, policy and content: failures, not bounces.
    (552, "5.2.2 The email account that you tried to reach is over quota.", None),
    (554, "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", None),
    (550, "5.7.1 Message rejected as spam by Content Filtering.", None),
    (550, "5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail users", None),
    (554, "5.6.0 Message content rejected", None),
    # Without an enhanced code the reply does not say what was wrong.
    (550, "User unknown", None),
    (554, "delivery error: dd This account has been disabled or discontinued [#102]. - mta1.example.test", None),
    (550, "Requested action not taken: mailbox unavailable", None),
    # Temporary replies: soft once the deferrals ran out, except those about our sending.
    (452, "4.2.2 The email account that you tried to reach is over quota.", SOFT),
    (451, "4.3.0 Temporary failure, please try again later", SOFT),
    (
        450,
        "4.2.1 The user you are trying to contact is receiving mail at a rate that\n4.2.1 prevents additional messages",
        SOFT,
    ),
    (421, "4.7.0 Try again later, closing connection.", None),
    (454, "Throttling failure: Maximum sending rate exceeded.", None),
    # No reply at all (the network): nothing about the address.
    (None, "connection lost at RCPT: [Errno 104] Connection reset by peer", None),
]


@pytest.mark.parametrize("code, text, kind", REPLIES, ids=[f"{c} {t[:40]}" for c, t, _ in REPLIES])
def test_a_final_reply_is_classified(code, text, kind):
    assert kind_of(code, enhanced_code(text), text) == kind


class Row:
    def __init__(self, pk: int, status: str):
        self.pk, self.status = pk, status


def result(status: str, **recipients: RecipientResult) -> SmtpResult:
    return SmtpResult(
        status, None, "", attempts=1, recipients={f"{name}@example.test": r for name, r in recipients.items()}
    )


def test_a_batch_gives_hard_bounces_per_recipient_and_soft_ones_for_rows_out_of_retries():
    unknown = RecipientResult(FAILED, 550, "5.1.1 <ann@example.test>: Recipient address rejected", "rcpt")
    policy = RecipientResult(FAILED, 554, "5.7.1 Relay access denied", "rcpt")
    later = RecipientResult(DEFERRED, 451, "4.3.0 Temporary failure", "rcpt")
    judged = [
        (Row(1, SENT), result(SENT, bob=RecipientResult(SENT, 250, "2.0.0 Ok", "dot"))),
        (Row(2, SENT), result(SENT, bob=RecipientResult(SENT, 250, "2.0.0 Ok", "dot"), ann=unknown, cy=policy)),
        (Row(3, FAILED), result(FAILED, ann=unknown)),
        (Row(4, FAILED), result(DEFERRED, dan=later)),  # its retries are used up
        (Row(5, DEFERRED), result(DEFERRED, dan=later)),  # it goes again later
        (Row(6, DEFERRED), result(DEFERRED, dan=later, ann=unknown)),  # again later, to dan only
    ]

    found = found_in(judged)

    assert {pk: [(b.kind, b.email, b.code, b.status, b.text) for b in bounces] for pk, bounces in found.items()} == {
        2: [(HARD, "ann@example.test", 550, "5.1.1", "<ann@example.test>: Recipient address rejected")],
        3: [(HARD, "ann@example.test", 550, "5.1.1", "<ann@example.test>: Recipient address rejected")],
        4: [(SOFT, "dan@example.test", 451, "4.3.0", "Temporary failure")],
        6: [(HARD, "ann@example.test", 550, "5.1.1", "<ann@example.test>: Recipient address rejected")],
    }


@pytest.mark.parametrize(
    "answer",
    [
        RecipientResult(
            FAILED, 550, "5.1.0 <bounces+d1-0123456789abcdef@example.test>: Sender address rejected", "mail"
        ),
        RecipientResult(DEFERRED, 451, "4.1.8 Sender address rejected: Domain not found", "mail"),
        RecipientResult(FAILED, 554, "5.1.1 Message refused: unknown recipient in the content scan", "dot"),
        RecipientResult(DEFERRED, 451, "4.3.0 Temporary failure", "dot"),
        RecipientResult(FAILED, 401, "Postmark API 401 Unauthorized: Bad or missing API token."),  # an ESP's
        RecipientResult(DEFERRED, 429, "Postmark API 429 Too Many Requests: Rate limit exceeded"),
    ],
    ids=["MAIL 550 5.1.0", "MAIL 451", "DATA 554 5.1.1", "DATA 451", "ESP 401", "ESP 429"],
)
def test_a_reply_to_anything_but_the_recipients_rcpt_is_no_bounce(answer):
    """Only the reply to RCPT TO speaks of the address: a refused sender, a refused message, an
    ESP's HTTP status say nothing about it, whatever their codes look like."""
    judged = [(Row(1, FAILED), result(FAILED, ann=answer, bob=answer))]

    assert found_in(judged) == {}
