"""The "test connection" probe against real SMTP servers on loopback."""

import socket
import threading
import time

import pytest

from smtp_settings.models import SmtpServer
from smtp_settings.probe import probe


def _server(**fields) -> SmtpServer:
    defaults = {"name": "probe", "host": "127.0.0.1", "tls": "none", "auth_protocol": "none", "send_timeout": 5}
    return SmtpServer(**(defaults | fields))


def _names(result) -> list[str]:
    return [step.name for step in result.steps]


def test_plain_connection_greets_and_quits(smtp_sandbox):
    sandbox = smtp_sandbox()
    result = probe(_server(port=sandbox.port))
    assert result.ok, result.error
    assert _names(result) == ["connect", "EHLO", "QUIT"]
    assert result.steps[0].code == 220 and "Relaydeck sandbox" in result.steps[0].text
    assert sandbox.received == []


def test_sends_one_test_message_when_given_an_address(smtp_sandbox):
    sandbox = smtp_sandbox()
    server = _server(port=sandbox.port, custom_headers=[["X-Campaign-Tag", "probe"]])
    result = probe(server, to_email="admin@example.test", from_email="sender@example.test")
    assert result.ok, result.error
    assert _names(result) == ["connect", "EHLO", "MAIL FROM", "RCPT TO", "DATA", "QUIT"]
    [message] = sandbox.received
    assert message.rcpt_tos == ("admin@example.test",)
    assert message.mail_from == "sender@example.test"
    assert b"X-Campaign-Tag: probe" in message.data
    assert message.message_id


def test_authenticates_with_login_and_plain(smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:s3cret")
    for protocol in ("login", "plain"):
        result = probe(_server(port=sandbox.port, auth_protocol=protocol, username="relay", password="s3cret"))
        assert result.ok, result.error
        assert f"AUTH {protocol.upper()}" in _names(result)


def test_wrong_password_says_authentication_failed_with_535(smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:s3cret")
    result = probe(_server(port=sandbox.port, auth_protocol="login", username="relay", password="wrong"))
    assert not result.ok
    assert result.error.startswith("Authentication failed (535)")
    assert result.raw_reply.startswith("535")


UTF8_USER, UTF8_PASSWORD = "üser", "pässwörd"


@pytest.mark.parametrize("protocol", ["plain", "login", "cram-md5"])
def test_authenticates_with_utf8_credentials(smtp_sandbox, protocol):
    sandbox = smtp_sandbox(auth=f"{UTF8_USER}:{UTF8_PASSWORD}", cram_md5=True)
    server = _server(port=sandbox.port, auth_protocol=protocol, username=UTF8_USER, password=UTF8_PASSWORD)
    result = probe(server, to_email="admin@example.test")
    assert result.ok, result.error
    assert f"AUTH {protocol.upper()}" in _names(result)
    assert len(sandbox.received) == 1


@pytest.mark.parametrize("protocol", ["plain", "login", "cram-md5"])
def test_a_wrong_utf8_password_says_authentication_failed_with_535(smtp_sandbox, protocol):
    sandbox = smtp_sandbox(auth=f"{UTF8_USER}:{UTF8_PASSWORD}", cram_md5=True)
    result = probe(_server(port=sandbox.port, auth_protocol=protocol, username=UTF8_USER, password="pässwört"))
    assert result.error.startswith("Authentication failed (535)")
    assert result.raw_reply.startswith("535")


def test_a_utf8_username_that_looks_like_an_address_is_not_used_as_the_envelope_sender(smtp_sandbox):
    sandbox = smtp_sandbox(auth="jörg@example.test:pässwörd")
    server = _server(port=sandbox.port, auth_protocol="plain", username="jörg@example.test", password="pässwörd")
    result = probe(server, to_email="admin@example.test")
    assert result.ok, result.error
    assert sandbox.received[0].mail_from.startswith("relaydeck@")


def test_an_internationalised_domain_goes_out_as_punycode(smtp_sandbox):
    sandbox = smtp_sandbox()
    result = probe(_server(port=sandbox.port), to_email="info@bücher.test", from_email="news@bücher.test")
    assert result.ok, result.error
    [message] = sandbox.received
    assert (message.mail_from, message.rcpt_tos) == ("news@xn--bcher-kva.test", ("info@xn--bcher-kva.test",))


def test_auth_mechanism_the_server_does_not_offer(smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:s3cret")
    result = probe(_server(port=sandbox.port, auth_protocol="cram-md5", username="relay", password="s3cret"))
    assert "does not offer AUTH CRAM-MD5" in result.error


def test_starttls_with_a_trusted_certificate(smtp_sandbox, certificates, trust_test_ca):
    sandbox = smtp_sandbox(tls_context=certificates.server_context(), auth="relay:s3cret")
    server = _server(port=sandbox.port, tls="starttls", auth_protocol="plain", username="relay", password="s3cret")
    result = probe(server, to_email="admin@example.test")
    assert result.ok, result.error
    assert _names(result)[:5] == ["connect", "EHLO", "STARTTLS", "EHLO", "AUTH PLAIN"]
    assert len(sandbox.received) == 1


def test_starttls_with_an_untrusted_certificate_fails_verification(smtp_sandbox, certificates):
    sandbox = smtp_sandbox(tls_context=certificates.server_context())
    result = probe(_server(port=sandbox.port, tls="starttls"))
    assert result.error.startswith("TLS verification failed")
    assert "certificate" in result.error


def test_skip_verify_accepts_an_untrusted_certificate(smtp_sandbox, certificates):
    sandbox = smtp_sandbox(tls_context=certificates.server_context())
    result = probe(_server(port=sandbox.port, tls="starttls", tls_skip_verify=True))
    assert result.ok, result.error


def test_implicit_tls(smtp_sandbox, certificates, trust_test_ca):
    sandbox = smtp_sandbox(tls_context=certificates.server_context(), implicit_tls=True)
    result = probe(_server(port=sandbox.port, tls="ssl"))
    assert result.ok, result.error
    assert _names(result) == ["connect", "EHLO", "QUIT"]


def test_starttls_not_offered(smtp_sandbox):
    sandbox = smtp_sandbox()
    result = probe(_server(port=sandbox.port, tls="starttls"))
    assert "does not offer STARTTLS" in result.error


def test_connection_refused(closed_port):
    result = probe(_server(port=closed_port))
    assert result.error.startswith(f"Connection refused by 127.0.0.1:{closed_port}")


def test_dns_failure():
    # A name with a space fails in the local resolver library, so no DNS query leaves the machine.
    result = probe(_server(host="no such host", port=25))
    assert result.error == "DNS failure: the host name 'no such host' could not be resolved."


def test_server_refusing_the_session_at_greeting(smtp_sandbox):
    text = "421 4.3.2 The maximum number of concurrent connections has exceeded a limit, closing transmission channel"
    sandbox = smtp_sandbox(refuse_with=text)
    result = probe(_server(port=sandbox.port))
    assert result.error.startswith("The server is closing the session (421) at connect")
    assert result.raw_reply == text


@pytest.fixture
def silent_server():
    """Accepts TCP connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in accepted:
        conn.close()


def test_timeout_after_send_timeout_seconds(silent_server):
    started = time.monotonic()
    result = probe(_server(port=silent_server, send_timeout=1))
    assert time.monotonic() - started < 2
    assert result.error == "Timed out after 1 s waiting for the server at the connect step."
