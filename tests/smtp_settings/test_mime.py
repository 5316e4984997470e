"""message_bytes: the same bytes as Django's as_bytes(linesep="\\r\\n"), whatever the message."""

import random
from email import message_from_bytes

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives

from smtp_settings.mime import message_bytes


def _alternatives() -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        "Hello Ann", "Text part\n" * 30, "News <news@example.test>", ["Ann <ann@example.test>"], cc=["c@example.test"]
    )
    message.attach_alternative("<p>HTML part</p>" * 40, "text/html")
    return message


def _html_only() -> EmailMessage:
    message = EmailMessage("Hi", "<p>Hello</p>\r\n" * 3, "news@example.test", ["r@example.test"])
    message.content_subtype = "html"
    return message


def _with_attachment() -> EmailMessage:
    message = EmailMessage("Report", "See attached.", "news@example.test", ["ann@example.test"])
    message.attach("report.bin", bytes(range(256)) * 8, "application/octet-stream")
    message.attach("notes.txt", "é" * 300, "text/plain")
    return message


MESSAGES = {
    "plain": lambda: EmailMessage("Weekly news", "Body\n", "news@example.test", ["r@example.test"]),
    "long line body": lambda: EmailMessage("Weekly", "x" * 2500, "news@example.test", ["r@example.test"]),
    "non-ASCII subject and names": lambda: EmailMessage(
        "Grüße aus Köln ✉", "Hallo\n", "Zoë Müller <zoe@example.test>", ["Jürgen <j@example.test>"]
    ),
    "mixed line endings": lambda: EmailMessage(
        "Hi", "one\r\ntwo\rthree\nfour\n\n\rfive", "news@example.test", ["r@example.test"]
    ),
    "non-ASCII body, no final newline": lambda: EmailMessage(
        "Hi", "Grüße\nzwei\r\ndrei ✉", "news@example.test", ["r@example.test"]
    ),
    "long subject": lambda: EmailMessage("word " * 40, "Body\n", "news@example.test", ["r@example.test"]),
    "spacing in headers": lambda: EmailMessage(
        "Two  spaces and\ta tab ", "Body\n", "news@example.test", ["r@example.test"], headers={"X-Pad": " lead"}
    ),
    "long custom headers": lambda: EmailMessage(
        "Hi",
        "Body\n",
        "news@example.test",
        ["r@example.test"],
        headers={"List-Unsubscribe": "<https://mail.example.test/u/" + "a" * 90 + "/>", "X-Tag": "a=b; c=?d?"},
    ),
    "HTML only": _html_only,
    "alternatives": _alternatives,
    "attachments": _with_attachment,
    "reply-to and many recipients": lambda: EmailMessage(
        "Hi", "Body\n", "n@example.test", [f"r{n}@example.test" for n in range(30)], reply_to=["x@example.test"]
    ),
}


@pytest.mark.parametrize("make", MESSAGES.values(), ids=MESSAGES.keys())
def test_same_bytes_as_djangos_rendering(make):
    mime = make().message()
    random.seed(7)  # the same multipart boundaries for both
    expected = mime.as_bytes(linesep="\r\n")
    random.seed(7)
    assert message_bytes(mime) == expected


def test_a_body_that_contains_the_boundary_gets_another_one():
    message = _alternatives()
    random.seed(3)
    boundary = message_from_bytes(message_bytes(message.message())).get_boundary()
    message.body = f"--{boundary}\nnot a boundary\n"
    random.seed(3)  # the generator draws the very same boundary first

    parsed = message_from_bytes(message_bytes(message.message()))

    assert parsed.get_boundary() != boundary
    assert [part.get_content_type() for part in parsed.get_payload()] == ["text/plain", "text/html"]
    assert f"--{boundary}" in parsed.get_payload()[0].get_payload(decode=True).decode()
