"""Opening an authenticated SMTP session for an SmtpServer, one reported step at a time.

Both the settings page's "test connection" and the connection pool open sessions here, so
they agree on TLS, verification and AUTH. Each step's reply and duration goes to `on_step`;
a failing step raises `SmtpStepError`, which names the step and keeps the server's reply.
"""

import base64
import binascii
import hmac
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from smtp_settings.replies import BoundedSMTP, BoundedSMTPSSL, ProtocolError

AUTH_METHODS = {"plain": "PLAIN", "login": "LOGIN", "cram-md5": "CRAM-MD5"}


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    code: int | None
    text: str
    duration_s: float

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""


class SmtpStepError(Exception):
    """A step of an SMTP exchange failed. `code`/`text` are the server's reply, if it sent one."""

    def __init__(self, step: str, error: BaseException, code: int | None = None, text: str = ""):
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error
        self.code = code
        self.text = text


def tls_context(skip_verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _decode(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def reply_of(error: BaseException) -> tuple[int | None, str]:
    """The SMTP reply carried by an smtplib exception, if any."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()))
        return code, _decode(text)
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code, _decode(error.smtp_error)
    return None, ""


class Deadline:
    """One budget for a whole exchange, so no sequence of slow steps outlasts it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.ends_at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.seconds:g} s")
        return left


class StepRunner:
    """Runs named SMTP steps, reporting each to `on_step`. The session's own deadline
    (`BoundedSMTP.ends_at`) bounds every read and write of them."""

    def __init__(self, on_step: Callable[[Step], None] | None = None):
        self.on_step = on_step or (lambda step: None)

    def run(self, name: str, action: Callable[[], tuple[int, bytes | str]], expect: tuple[int, ...]) -> str:
        started = time.monotonic()
        try:
            code, text = action()
        except (smtplib.SMTPException, OSError) as error:
            code, text = reply_of(error)
            self.on_step(Step(name, False, code, text, time.monotonic() - started))
            raise SmtpStepError(name, error, code, text) from error
        text = _decode(text)
        ok = code in expect
        self.on_step(Step(name, ok, code, text, time.monotonic() - started))
        if not ok:
            raise SmtpStepError(name, smtplib.SMTPResponseException(code, text), code, text)
        return text


def open_session(server, deadline: Deadline, on_step: Callable[[Step], None] | None = None) -> BoundedSMTP:
    """Connect, greet, EHLO, secure and authenticate as `server` says; return the live session.

    `server` is anything with SmtpServer's connection fields. Every reply must come within
    its `send_timeout`, and the whole opening within `deadline`; the session keeps that
    deadline (`ends_at`) until its owner lifts it. On failure the socket is closed and
    SmtpStepError raised.
    """
    runner = StepRunner(on_step)
    context = tls_context(server.tls_skip_verify)
    session = {
        "local_hostname": server.helo_hostname or None,
        "reply_timeout_s": server.send_timeout,
        "ends_at": deadline.ends_at,
        "secrets": (server.username, server.password),
    }
    smtp = BoundedSMTPSSL(context=context, **session) if server.tls == "ssl" else BoundedSMTP(**session)
    # smtplib takes the TLS server name from the constructor's host, which we cannot pass
    # without connecting outside a timed step.
    smtp._host = server.host
    try:
        smtp.timeout = deadline.remaining()
        runner.run("connect", lambda: smtp.connect(server.host, server.port), expect=(220,))
        features = runner.run("EHLO", smtp.ehlo, expect=(250,))
        if server.tls == "starttls":
            if not smtp.has_extn("starttls"):
                error = smtplib.SMTPNotSupportedError("the server does not offer STARTTLS")
                runner.on_step(Step("STARTTLS", False, None, features, 0.0))
                raise SmtpStepError("STARTTLS", error)
            runner.run("STARTTLS", lambda: smtp.starttls(context=context), expect=(220,))
            runner.run("EHLO", smtp.ehlo, expect=(250,))
        if server.auth_protocol != "none":
            _authenticate(runner, smtp, server)
        return smtp
    except BaseException:
        smtp.close()
        raise


def _authenticate(runner: StepRunner, smtp: smtplib.SMTP, server) -> None:
    mechanism = AUTH_METHODS[server.auth_protocol]
    offered = (smtp.esmtp_features.get("auth") or "").upper().split()
    if mechanism not in offered:
        error = smtplib.SMTPNotSupportedError(f"the server does not offer AUTH {mechanism}")
        runner.on_step(Step("AUTH", False, None, f"offered: {' '.join(offered) or 'none'}", 0.0))
        raise SmtpStepError("AUTH", error)
    runner.run(
        f"AUTH {mechanism}",
        lambda: _auth_exchange(smtp, mechanism, server.username.encode(), server.password.encode()),
        expect=(235, 503),
    )


def _auth_exchange(smtp: smtplib.SMTP, mechanism: str, user: bytes, secret: bytes) -> tuple[int, bytes]:
    """AUTH with the credentials as UTF-8, which RFC 4954 (PLAIN, LOGIN) allows; smtplib
    encodes them as ASCII and raises on anything else. Returns the server's last reply."""
    if mechanism == "PLAIN":
        initial, answers = b"\0" + user + b"\0" + secret, []
    elif mechanism == "LOGIN":
        initial, answers = user, [partial(_login_answer, user, secret)] * 2
    else:
        initial, answers = None, [partial(_cram_md5_answer, user, secret)]
    code, reply = smtp.docmd("AUTH", mechanism if initial is None else f"{mechanism} {_base64(initial)}")
    for answer in answers:
        if code != 334:
            break
        code, reply = smtp.docmd(_base64(answer(reply)))
    # A challenge nobody answered ends the step: it is kept and shown, so cleaned like any reply.
    return code, smtp.redact(reply) if code == 334 else reply


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _login_answer(user: bytes, secret: bytes, reply: bytes) -> bytes:
    """The password, unless the server ignored the initial response and asks for the username
    again (as smtplib allows for too)."""
    try:
        prompt = base64.b64decode(reply)
    except binascii.Error:
        prompt = b""
    return user if prompt.lower().startswith(b"user") else secret


def _cram_md5_answer(user: bytes, secret: bytes, reply: bytes) -> bytes:
    """RFC 2195: the user and the digest of the server's challenge keyed with the secret."""
    try:
        challenge = base64.b64decode(reply)
    except binascii.Error:
        raise smtplib.SMTPResponseException(334, b"the server's CRAM-MD5 challenge is not base64") from None
    return user + b" " + hmac.digest(secret, challenge, "md5").hex().encode()


def explain(error: SmtpStepError, server) -> str:
    """One plain sentence saying why a step failed."""
    cause, where = error.error, f"{server.host}:{server.port}"
    if isinstance(cause, smtplib.SMTPServerDisconnected) and isinstance(cause.__context__, OSError):
        cause = cause.__context__  # smtplib hides timeouts and resets behind "unexpectedly closed"
    if isinstance(cause, ProtocolError):
        return f"The server broke the SMTP protocol at the {error.step} step: {cause}."
    if isinstance(cause, TimeoutError | socket.timeout):
        return f"Timed out after {server.send_timeout} s waiting for the server at the {error.step} step."
    if isinstance(cause, socket.gaierror):
        return f"DNS failure: the host name {server.host!r} could not be resolved."
    if isinstance(cause, ConnectionRefusedError):
        return f"Connection refused by {where}: nothing is listening there, or a firewall rejects it."
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS verification failed: {cause.verify_message or cause.reason}. "
            "Fix the server's certificate, or tick 'Skip TLS verification' if you trust it."
        )
    if isinstance(cause, ssl.SSLError):
        return f"The TLS handshake failed ({cause.reason or cause}). Check the TLS mode and port."
    if isinstance(cause, smtplib.SMTPNotSupportedError):
        reason = str(cause)
        return f"{reason[0].upper()}{reason[1:]}; choose another TLS mode or auth protocol."
    if isinstance(cause, smtplib.SMTPAuthenticationError) or (error.step.startswith("AUTH") and error.code):
        return f"Authentication failed ({error.code}): the server rejected the username or password."
    if isinstance(cause, smtplib.SMTPServerDisconnected):
        return f"The server closed the connection during {error.step}."
    if error.code == 421:
        return f"The server is closing the session (421) at {error.step}: it is busy or limiting this client."
    if error.code:
        kind = "temporarily refused" if 400 <= error.code < 500 else "refused"
        return f"The server {kind} {error.step} with {error.code}."
    if isinstance(cause, ConnectionError):
        return f"The connection to {where} broke during {error.step}: {cause}."
    return f"{error.step} failed: {cause}."
