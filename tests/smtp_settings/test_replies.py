"""Reading one SMTP reply, and redacting credentials from it, over arbitrary input."""

import base64
import io
import smtplib
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_settings.redaction import REDACTED, redact, secret_pattern
from smtp_settings.replies import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    TIMEOUT_SLACK_S,
    ProtocolError,
    _wait_at_most,
    read_reply,
)

SMALL_LINES, SMALL_BYTES = 5, 200  # bounds small enough for generated input to cross them

reply_lines = st.lists(
    st.tuples(st.integers(0, 1200), st.sampled_from(["-", " ", ""]), st.binary(max_size=60)), min_size=1, max_size=8
)


def _read(stream: bytes, **bounds):
    return read_reply(io.BytesIO(stream).readline, **bounds)


@given(st.binary(max_size=600))
def test_any_byte_stream_gives_a_valid_reply_or_a_protocol_error(stream):
    _assert_valid_or_refused(stream)


@given(reply_lines)
def test_any_reply_shaped_stream_gives_a_valid_reply_or_a_protocol_error(lines):
    """Streams close to real replies, with codes of every range, separators and bounds."""
    stream = b"".join(b"%d%b%b\r\n" % (code, separator.encode(), text) for code, separator, text in lines)
    _assert_valid_or_refused(stream)


def _assert_valid_or_refused(stream: bytes) -> None:
    try:
        code, text = _read(stream, max_lines=SMALL_LINES, max_bytes=SMALL_BYTES)
    except ProtocolError:
        return
    except smtplib.SMTPServerDisconnected as error:
        assert str(error) == "Connection unexpectedly closed"  # the stream ended mid-reply
        return
    assert type(code) is int and 200 <= code <= 599
    assert isinstance(text, bytes) and len(text) <= SMALL_BYTES
    assert text.count(b"\n") < SMALL_LINES
    assert stream.startswith(b"%d" % code)


@given(
    st.integers(200, 599),
    st.lists(st.binary(max_size=80).map(lambda text: text.replace(b"\n", b"").replace(b"\r", b"")), min_size=1),
)
def test_a_well_formed_reply_within_bounds_reads_back_whole(code, texts):
    texts = [text.strip(b" \t") for text in texts[:MAX_REPLY_LINES]]
    lines = [b"%d-%b\r\n" % (code, text) for text in texts[:-1]] + [b"%d %b\r\n" % (code, texts[-1])]
    assert _read(b"".join(lines) + b"250 the next reply") == (code, b"\n".join(texts))


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"abc\r\n", "an invalid reply code: 'abc'"),
        (b"-45 negative\r\n", "an invalid reply code: '-45 negative'"),
        (b"999 what\r\n", "an invalid reply code: '999 what'"),
        (b"150 maybe\r\n", "an invalid reply code: '150 maybe'"),
        (b"250-one\r\n550 two\r\n", "mixed codes 250 and 550"),
        (b"250x\r\n", "a malformed reply line: '250x'"),
        (b"250-A\r\n" * MAX_REPLY_LINES, f"ran past {MAX_REPLY_LINES} lines"),
        (b"250 " + b"A" * MAX_REPLY_BYTES, "exceeded 64 KiB"),
    ],
)
def test_what_a_protocol_error_says(stream, reason):
    with pytest.raises(ProtocolError, match=reason):
        _read(stream)


def test_a_reply_at_the_bounds_is_read():
    line = b"250-" + b"A" * (MAX_REPLY_BYTES // MAX_REPLY_LINES - 6) + b"\r\n"
    stream = line * (MAX_REPLY_LINES - 1) + line.replace(b"-", b" ", 1)
    assert len(stream) <= MAX_REPLY_BYTES
    code, text = _read(stream)
    assert code == 250 and text.count(b"\n") == MAX_REPLY_LINES - 1


@pytest.mark.parametrize(
    ("current", "wanted", "after"),
    [
        (5.0, 5.0, 5.0),
        (5.0, 5.0 - TIMEOUT_SLACK_S / 2, 5.0),  # about right: no system call
        (5.0, 4.0, 4.0),  # a deadline closer than the slack allows
        (5.0, 6.0, 6.0),  # never shorter than wanted: a reply could come in time
        (None, 5.0, 5.0),  # a blocking socket gets its deadline
    ],
)
def test_a_sockets_timeout_is_changed_only_when_it_is_not_about_right(current, wanted, after):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(current)
        _wait_at_most(ours, wanted)
        assert ours.gettimeout() == after


# -- redaction --

secrets = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=4, max_size=30)


@given(secrets, secrets, st.binary(max_size=20), st.binary(max_size=20))
def test_credentials_inside_any_base64_text_are_redacted(username, password, before, after):
    pattern = secret_pattern(username, password)
    for secret in (username, password, f"\0{username}\0{password}"):
        redacted = redact(base64.b64encode(before + secret.encode() + after), pattern)
        assert REDACTED in redacted
        assert base64.b64encode(secret.encode()) not in redacted.replace(REDACTED, b"|")


@given(secrets, secrets)
def test_credentials_echoed_as_typed_are_redacted(username, password):
    pattern = secret_pattern(username, password)
    echoed = f"535 no such account {username}:{password}.".encode()
    redacted = redact(echoed, pattern).replace(REDACTED, b"|")  # "[redacted]" may hold a secret like "dact"
    assert username.encode() not in redacted and password.encode() not in redacted


def test_a_username_is_redacted_as_a_word_only():
    pattern = secret_pattern("smtp", "correct horse")
    assert redact(b"250-SMTPUTF8", pattern) == b"250-SMTPUTF8"
    assert redact(b"535 smtp: correct horse is wrong", pattern) == b"535 [redacted]: [redacted] is wrong"


def test_secrets_too_short_to_tell_from_reply_text_are_left():
    assert secret_pattern("ok", "") is None
    assert redact(b"250 2.0.0 ok", secret_pattern("ok", "0")) == b"250 2.0.0 ok"
