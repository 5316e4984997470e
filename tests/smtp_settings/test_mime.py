"""message_bytes: the same bytes as Django's as_bytes(linesep="\\r\\n"), whatever the message.
wire_bytes: the same Message-ID and bytes as Django's message() with the server's headers
added, written by message_bytes, whatever the message, without building the email package's
objects for the messages a campaign sends."""

import random
import string
from email import message_from_bytes
from email.charset import Charset
from email.message import Message
from email.policy import compat32
from unittest import mock

import hypothesis
import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from hypothesis import given
from hypothesis import strategies as st

from smtp_settings.mime import message_bytes, rendered_by_django, wire_bytes


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
    "lines of 998 bytes at most": lambda: EmailMessage(
        "Weekly", "é" * 499 + "\n" + "x" * 998, "news@example.test", ["r@example.test"]
    ),
    "a line of 999 bytes": lambda: EmailMessage(
        "Weekly", "x\r\n" + "é" * 499 + "x", "news@example.test", ["r@example.test"]
    ),
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


# -- folding ---------------------------------------------------------------------------------

_VISIBLE = string.ascii_letters + string.digits + string.punctuation
_WORD = st.text(alphabet=_VISIBLE, min_size=1, max_size=20)
_LONG_WORD = st.text(alphabet=_VISIBLE, min_size=50, max_size=130)  # a URL, say
_FOLDABLE = st.one_of(
    st.lists(_WORD, min_size=1, max_size=15).map(" ".join),
    _LONG_WORD,
    st.lists(st.one_of(_WORD, _LONG_WORD), min_size=2, max_size=4).map(" ".join),
    st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", "")),
    st.text(alphabet="aé ✉;,\t", max_size=120),
)


@hypothesis.settings(max_examples=300)
@given(name=st.sampled_from(["Subject", "X-Campaign-Identifier", "List-Unsubscribe"]), value=_FOLDABLE)
def test_a_header_is_folded_as_the_email_package_folds_it(name, value):
    mime = Message()
    mime[name] = value
    mime.set_payload("")

    assert message_bytes(mime) == mime.as_bytes(policy=compat32.clone(linesep="\r\n"))


# -- wire_bytes ------------------------------------------------------------------------------


def outcome(render, message, custom_headers=()) -> tuple[str, bytes] | type:
    """What `render` makes of the message, or the type of what it raises, with the same clock
    (Date, Message-ID) and the same random draws (Message-ID, boundary) for every call."""
    random.seed(11)
    with mock.patch("time.time", return_value=1_767_225_600.25):
        try:
            return render(message, custom_headers)
        except Exception as error:
            return type(error)


CUSTOM_HEADERS = (("X-Mailer", "Relaydeck"), ("list-unsubscribe", "<mailto:u@example.test>"), ("X-Mailer", "twice"))


@pytest.mark.parametrize("make", MESSAGES.values(), ids=MESSAGES.keys())
@pytest.mark.parametrize("localtime", [False, True])
def test_wire_bytes_are_djangos(make, localtime, settings):
    settings.EMAIL_USE_LOCALTIME = localtime
    message = make()

    assert outcome(wire_bytes, message, CUSTOM_HEADERS) == outcome(rendered_by_django, message, CUSTOM_HEADERS)


def _campaign_message() -> EmailMultiAlternatives:
    """As campaigns/rendering.py makes one: text and HTML, its Message-ID and List-Unsubscribe."""
    unsubscribe = "https://relaydeck.example.test/unsubscribe/4711.12:Jq0hZ0bW0kq3x7sYhV1m2hAqXc0d9Q8kZyP3sWf1ZxE/"
    message = EmailMultiAlternatives(
        "Our spring news for Ann",
        "Dear Ann,\n\n" + "Spring is here and so are our new opening hours.\n" * 20,
        "News <news@example.test>",
        ["ann@example.test"],
        reply_to=["replies@example.test"],
        headers={
            "Message-ID": "<4711.12@relaydeck.example.test>",
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    message.attach_alternative(
        "<p>Dear Ann,</p>" + "<p>Spring is here and so are our new hours.</p>\n" * 40, "text/html"
    )
    return message


def test_a_campaign_message_is_written_without_djangos_rendering():
    message = _campaign_message()
    expected = outcome(rendered_by_django, message, CUSTOM_HEADERS)
    message.message = lambda: pytest.fail("wire_bytes built the email package's objects")

    assert outcome(wire_bytes, message, CUSTOM_HEADERS) == expected
    assert expected[0] == "<4711.12@relaydeck.example.test>"


def test_a_body_that_contains_the_boundary_gets_another_one_from_wire_bytes_too():
    message = _campaign_message()
    boundary = message_from_bytes(outcome(wire_bytes, message)[1]).get_boundary()
    message.body = f"--{boundary}\nnot a boundary\n"

    written = outcome(wire_bytes, message)

    assert written == outcome(rendered_by_django, message)
    assert message_from_bytes(written[1]).get_boundary() != boundary


def _now_and_then(usual, rare, one_in: int):
    """`usual`, and about once in `one_in` draws `rare` (most messages must get through to
    compare their bytes; some must not, to compare the errors)."""
    return st.integers(1, one_in).flatmap(lambda n: rare if n == one_in else usual)


_TEXT = string.ascii_letters + string.digits + string.punctuation + " \t" + "éüß✉中\u00a0"
_CONTROLS = "\r\n\x00\x0b\x0c\x1c\x7f\x85\u2028"  # line breaks to Python, some of them
_PHRASE = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "-.:/<>=?@!;,", min_size=1, max_size=15),
    min_size=1,
    max_size=12,
).map(" ".join)
HEADER_TEXT = _now_and_then(
    st.one_of(_PHRASE, _LONG_WORD, st.text(alphabet=_TEXT, max_size=90)), st.text(alphabet=_TEXT + _CONTROLS), one_in=12
)
_NAMES = st.one_of(st.just(""), st.text(alphabet=string.ascii_letters + " .'-éüß✉中", max_size=30))
_LOCAL_PARTS = st.one_of(
    st.sampled_from(["ann", "a.b+tag", "jörg", "o'hara"]), st.text(string.ascii_lowercase, min_size=1)
)
_DOMAINS = st.sampled_from(
    ["example.test", "mail.example.test", "bücher.example", "xn--bcher-kva.example", "例え.テスト"]
)
ADDRESSES = _now_and_then(
    st.one_of(
        st.builds(
            lambda name, local, domain: f"{name} <{local}@{domain}>" if name else f"{local}@{domain}",
            _NAMES,
            _LOCAL_PARTS,
            _DOMAINS,
        ),
        st.just('"Doe, Jane" <jane@example.test>'),
    ),
    st.sampled_from(["reader", "reader@example.test\nBcc: x@example.test", "<reader@example.test\x85>", ""]),
    one_in=12,
)
_BODY_TEXT = st.one_of(
    st.text(alphabet=_TEXT + _CONTROLS, max_size=400),
    st.lists(st.tuples(st.text(alphabet=_TEXT, max_size=80), st.sampled_from(["\r\n", "\n", "\r", ""]))).map(
        lambda lines: "".join(text + end for text, end in lines)
    ),
)
_LONG_LINES = st.builds(
    lambda head, char, count, tail: head + char * count + tail,
    _BODY_TEXT,
    st.sampled_from(["x", "é", "✉", " "]),
    st.integers(240, 1100),
    _BODY_TEXT,
)
# A lone surrogate, which no UTF-8 body can hold, now and then.
BODIES = _now_and_then(
    st.one_of(st.just(""), _BODY_TEXT, _LONG_LINES), _BODY_TEXT.map(lambda text: text + "\udce9"), one_in=12
)
_EXTRA_NAMES = ["Message-ID", "message-id", "List-Unsubscribe", "X-Tag", "From", "from", "To", "to", "Cc", "Reply-To"]
_EXTRA_NAMES += ["Date", "Subject", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
_SERVER_NAMES = ["X-Mailer", "x-mailer", "List-Unsubscribe", "X-Campaign", "MIME-Version", "Content-Transfer-Encoding"]


@st.composite
def emails(draw) -> EmailMessage:
    kind = draw(st.sampled_from([EmailMessage, EmailMultiAlternatives]))
    message = kind(
        draw(HEADER_TEXT),
        draw(BODIES),
        draw(ADDRESSES),
        draw(st.lists(ADDRESSES, max_size=3)),
        cc=draw(st.lists(ADDRESSES, max_size=2)),
        bcc=draw(st.lists(ADDRESSES, max_size=2)),
        reply_to=draw(st.lists(ADDRESSES, max_size=2)),
        headers=draw(st.dictionaries(st.sampled_from(_EXTRA_NAMES), HEADER_TEXT, max_size=4)),
    )
    message.content_subtype = draw(st.sampled_from(["plain", "html"]))
    message.encoding = draw(st.sampled_from([None, None, "utf-8", "iso-8859-1", Charset("utf-8")]))
    if kind is EmailMultiAlternatives and draw(st.booleans()):
        message.attach_alternative(draw(BODIES), "text/html")
    return message


@hypothesis.settings(max_examples=400, deadline=None)
@given(message=emails(), custom_headers=st.lists(st.tuples(st.sampled_from(_SERVER_NAMES), HEADER_TEXT), max_size=3))
def test_any_message_gets_djangos_bytes_or_its_error(message, custom_headers):
    assert outcome(wire_bytes, message, custom_headers) == outcome(rendered_by_django, message, custom_headers)
