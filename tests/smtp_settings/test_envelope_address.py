"""envelope_address: the bare address for MAIL FROM and RCPT TO, exactly what Django's
sanitize_address followed by parseaddr make of it, whether it takes the fast path or not."""

import string
from email.utils import parseaddr

import pytest
from django.core.mail.message import sanitize_address
from hypothesis import given
from hypothesis import strategies as st

from smtp_settings.backends import envelope_address


def outcome(parse, address, encoding: str) -> str | tuple[type, str]:
    """The address, or the error raised: on malformed input the email package raises more
    than ValueError (TypeError, even AttributeError), and ours must raise the same."""
    try:
        return parse(address, encoding)
    except Exception as error:
        return type(error), str(error)


def djangos(address, encoding: str) -> str:
    """Django's envelope address, and the one rule added: no control character in it."""
    parsed = parseaddr(sanitize_address(address, encoding))[1]
    if any(ord(char) < 32 or ord(char) == 127 for char in parsed):
        raise ValueError(f"a control character in the address {parsed!r}")
    return parsed


def same(address, encoding: str = "utf-8") -> bool:
    return outcome(envelope_address, address, encoding) == outcome(djangos, address, encoding)


HOSTILE = [
    "",
    "@",
    "reader@",
    "@example.test",
    "reader",
    "reader@@example.test",
    "reader@example.test\n",
    "reader@example.test\r\nBcc: victim@example.test",
    "reader\r@example.test",
    "read\x00er@example.test",
    "reader@exam\x7fple.test",
    "reader@example.test\x0b",
    "\treader@example.test",
    " reader@example.test",
    "reader@example.test ",
    "jörg@example.test",
    "reader@exämple.test",
    "reader@例え.テスト",
    "Zoë <zoe@example.test>",
    "News <news@example.test>",
    "<news@example.test>",
    '"Doe, Jane" <jane@example.test>',
    '"a b"@example.test',
    '"reader"@example.test',
    "reader@example.test (comment)",
    "reader(comment)@example.test",
    ".reader@example.test",
    "reader.@example.test",
    "re..ader@example.test",
    "reader@example..test",
    "reader@.example.test",
    "reader@example.test.",
    "reader@[127.0.0.1]",
    "reader@" + "a" * 63 + ".test",
    "reader@" + "a" * 64 + ".test",
    "reader@example." + "t" * 64,
    "reader@-example-.test",
    "=?utf-8?q?reader?=@example.test",
    "=?utf-8?b?cmVhZGVy?=@example.test",
    "a=b?c@example.test",
    "o'brien@example.test",
    "x!#$%&*/^`{|}~@example.test",
    "a@b,c@example.test",
    "a@example.test, b@example.test",
    "a@example.test;",
    "a\\@b@example.test",
    "Reader@Example.TEST",
    "reader+tag@sub-domain.example.test",
    "first_last-1@localhost",
    ("Reader", "reader@example.test"),
    ("", "reader@example.test"),
    ("Zoë", "zoe@exämple.test"),
    ("Name", "no-at-sign"),
]


@pytest.mark.parametrize("address", HOSTILE, ids=repr)
def test_agrees_with_django_on_hostile_and_unusual_addresses(address):
    assert same(address)


atom = st.text(string.ascii_letters + string.digits + "_+-", min_size=1, max_size=12)
label = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=63)
plain_addresses = st.builds(
    "{}@{}".format,
    st.lists(atom, min_size=1, max_size=3).map(".".join),
    st.lists(label, min_size=1, max_size=4).map(".".join),
)
# Plain addresses' characters, and the ones that make an address unusual or hostile.
ODD = string.ascii_letters[:6] + "._+-@" + "=? \"'<>(),;:\\[]\t\r\n\x00\x7f\x85éü例\u2028"


@given(plain_addresses)
def test_a_plain_address_is_the_envelope_address_as_django_makes_it(address):
    assert envelope_address(address, "utf-8") == address
    assert same(address)


@given(st.one_of(st.text(ODD, max_size=40), plain_addresses.map(lambda address: address + "\n")))
def test_agrees_with_django_on_any_text(address):
    assert same(address)


def test_a_plain_address_is_taken_as_it_is_whatever_the_encoding():
    assert same("reader@example.test", "iso-8859-1")
    assert same("reader@example.test", "not-a-codec")


def test_non_ascii_names_use_the_messages_encoding():
    for address in ("Zoë <zoe@example.test>", "jörg@example.test"):
        assert same(address, "iso-8859-1")
        assert same(address, "utf-8")
