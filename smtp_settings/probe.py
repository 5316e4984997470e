"""The settings page's "test connection": every step of a real SMTP exchange, timed."""

from dataclasses import dataclass, field

from django.core.mail import EmailMessage
from django.core.mail.utils import DNS_NAME
from django.utils import timezone

from smtp_settings.backends import envelope_address
from smtp_settings.connection import Deadline, SmtpStepError, Step, StepRunner, explain, open_session
from smtp_settings.mime import wire_bytes


@dataclass
class ProbeResult:
    steps: list[Step] = field(default_factory=list)
    error: str = ""  # one sentence; empty when every step passed
    raw_reply: str = ""  # the server's reply to the failing step, shown verbatim (escaped)
    note: str = ""  # what else to know about this kind of server

    MESSAGE_STEPS = ("DATA", "API send")  # the step that hands the test message over

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def checked(self) -> bool:
        """Whether anything was tried: an ESP without a harmless call, and no test message to
        send, leaves nothing that could fail (and nothing known to work)."""
        return bool(self.steps) or not self.ok

    @property
    def sent(self) -> bool:
        return any(step.name in self.MESSAGE_STEPS and step.ok for step in self.steps)

    @property
    def duration_s(self) -> float:
        return sum(step.duration_s for step in self.steps)


def test_message(server, from_email: str, to_email: str) -> EmailMessage:
    return EmailMessage(
        subject=f"Relaydeck test message via {server.name or server.host or server.esp_label}",
        body=f"This test message was sent by Relaydeck through {server.address} "
        f"at {timezone.now():%Y-%m-%d %H:%M:%S %Z}.\n",
        from_email=from_email,
        to=[to_email],
        headers=dict(server.custom_headers or []),
    )


def default_from_email(server) -> str:
    # A non-ASCII local part needs SMTPUTF8, which a relay may not offer: not worth guessing.
    if "@" in server.username and server.username.isascii():
        return server.username
    return f"relaydeck@{server.helo_hostname or DNS_NAME}"


def _test_transaction(server, from_email: str, to_email: str) -> tuple[str, str, bytes]:
    """MAIL FROM and RCPT TO addresses (an internationalised domain as punycode, as the
    backend sends it) and the test message's bytes; ValueError if they cannot be made."""
    message = test_message(server, from_email, to_email)
    return envelope_address(from_email, "utf-8"), envelope_address(to_email, "utf-8"), wire_bytes(message, ())[1]


def probe(server, to_email: str = "", from_email: str = "") -> ProbeResult:
    """Open a session as `server` says and, given `to_email`, send one test message.

    Never raises for anything the server or network does, and never takes longer than
    the server's `send_timeout` in all.
    """
    result = ProbeResult()
    if to_email:
        try:
            mail_from, rcpt_to, data = _test_transaction(server, from_email or default_from_email(server), to_email)
        except ValueError as error:  # a header or address that cannot go out (stored before it was validated)
            result.error = f"The test message cannot be built: {error}."
            return result
    deadline = Deadline(server.send_timeout)
    smtp = None
    try:
        smtp = open_session(server, deadline, on_step=result.steps.append)
        runner = StepRunner(on_step=result.steps.append)
        if to_email:
            runner.run("MAIL FROM", lambda: smtp.mail(mail_from), expect=(250,))
            runner.run("RCPT TO", lambda: smtp.rcpt(rcpt_to), expect=(250, 251))
            runner.run("DATA", lambda: smtp.data(data), expect=(250,))
        runner.run("QUIT", smtp.quit, expect=(221,))
    except SmtpStepError as error:
        result.error = explain(error, server)
        result.raw_reply = f"{error.code} {error.text}".strip() if error.code else str(error.error)
    finally:
        if smtp is not None:
            smtp.close()
    return result
