"""Header and address validation: nothing a user can set may add a header line to a message."""

from email import message_from_bytes, policy

import pytest
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_settings.mime import message_bytes
from smtp_settings.models import SmtpServer
from smtp_settings.validators import validate_address, validate_custom_headers, validate_header_text

# Where str.splitlines() (and so Python's email package) breaks a line, and the other controls.
LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
CONTROLS = [chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029"]
SAFE_FROM = "news@example.test"


def test_the_list_covers_every_character_python_breaks_lines_at():
    breaking = {chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) > 1}
    assert breaking == set(LINE_BREAKS)
    assert breaking <= set(CONTROLS)


def _rejects(validator, value) -> bool:
    try:
        validator(value)
    except ValidationError:
        return True
    return False


@given(st.text(), st.sampled_from(CONTROLS), st.text())
def test_any_text_with_a_line_break_or_control_character_is_rejected(before, control, after):
    value = before + control + after
    assert _rejects(validate_header_text, value)
    assert _rejects(validate_address, f"{value} <{SAFE_FROM}>")
    assert _rejects(validate_custom_headers, [["X-Tag", value]])


def test_a_tab_is_folding_whitespace_and_allowed():
    validate_header_text("a\tb")
    validate_custom_headers([["X-Tag", "a\tb"]])


def _header_names(data: bytes) -> list[str]:
    """The names of the header fields on the wire: every line of the header block that does
    not start with whitespace (a continuation) starts a field."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return sorted(line.split(":", 1)[0] for line in head.split("\r\n") if not line[:1].isspace())


def _wire(subject="Hello", from_email=SAFE_FROM, headers=None) -> bytes:
    message = EmailMessage(subject, "Body\n", from_email, ["to@example.test"], headers={"Message-ID": "<m@x>"})
    mime = message.message()
    for name, value in headers or []:
        mime[name] = value  # as the backend adds a server's custom headers
    return message_bytes(mime)


EXPECTED = _header_names(_wire())


@settings(max_examples=300)
@given(st.text())
def test_an_accepted_custom_header_value_is_exactly_one_header_on_the_wire(value):
    if _rejects(validate_custom_headers, [["X-Tag", value]]):
        return
    assert _header_names(_wire(headers=[("X-Tag", value)])) == sorted([*EXPECTED, "X-Tag"])


@settings(max_examples=300)
@given(st.text())
def test_an_accepted_subject_is_exactly_one_header_on_the_wire(value):
    if _rejects(validate_header_text, value):
        return
    assert _header_names(_wire(subject=value)) == EXPECTED


@settings(max_examples=300)
@given(st.text())
def test_an_accepted_display_name_is_one_from_header_with_one_address(name):
    from_email = f"{name} <{SAFE_FROM}>"
    if _rejects(validate_address, from_email):
        return
    data = _wire(from_email=from_email)
    assert _header_names(data) == EXPECTED
    assert message_from_bytes(data, policy=policy.default)["From"].addresses[0].addr_spec == SAFE_FROM


@pytest.mark.parametrize("value", [f"x{c}Bcc : evil@evil.test" for c in "\x0b\x0c\x1c\x1d\x1e"])
def test_the_message_writer_refuses_a_header_with_a_hidden_line_break(value):
    with pytest.raises(ValueError, match="the X-Tag header holds a line break"):
        _wire(headers=[("X-Tag", value)])


@pytest.mark.django_db
def test_a_custom_header_stored_around_validation_is_never_sent(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    SmtpServer.objects.filter(pk=server.pk).update(custom_headers=[["X-Tag", "x\x0bBcc : evil@evil.test"]])
    message = EmailMessage("Hi", "Body", SAFE_FROM, ["to@example.test"])

    get_connection("smtp_settings.backends.RotatingEmailBackend", server=server, fail_silently=True).send_messages(
        [message]
    )

    assert message.smtp_result.status == "failed"
    assert message.smtp_result.text == "not sent: the X-Tag header holds a line break (U+000B)"
    assert sandbox.received == []


@pytest.mark.django_db
def test_accepted_awkward_values_reach_the_server_as_exactly_the_headers_sent(smtp_sandbox, make_server):
    sandbox = smtp_sandbox()
    awkward = "tab\there, Bcc: evil@evil.test; ünïcödé " + "long " * 30
    validate_custom_headers([["X-Tag", awkward]])
    server = make_server(port=sandbox.port, custom_headers=[["X-Tag", awkward]])
    from_email = '"Evil, Bcc: evil@evil.test" <news@example.test>'
    validate_address(from_email)
    message = EmailMessage(awkward, "Body", from_email, ["to@example.test"])

    get_connection("smtp_settings.backends.RotatingEmailBackend", server=server).send_messages([message])

    [received] = sandbox.received
    assert received.rcpt_tos == ("to@example.test",)
    parsed = message_from_bytes(received.data, policy=policy.default)
    assert "Bcc" not in parsed
    assert _header_names(received.data) == sorted([*EXPECTED, "X-Tag"])
    assert [address.addr_spec for address in parsed["From"].addresses] == ["news@example.test"]
