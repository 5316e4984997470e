"""The settings page's "test connection": every step of a real SMTP exchange, timed."""

from dataclasses import dataclass, field

from django.core.mail import EmailMessage
from django.core.mail.utils import DNS_NAME
from django.utils import timezone

from smtp_settings.connection import Deadline, SmtpStepError, Step, StepRunner, explain, open_session


@dataclass
class ProbeResult:
    steps: list[Step] = field(default_factory=list)
    error: str = ""  # one sentence; empty when every step passed
    raw_reply: str = ""  # the server's reply to the failing step, shown verbatim (escaped)

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def sent(self) -> bool:
        return any(step.name == "DATA" and step.ok for step in self.steps)

    @property
    def duration_s(self) -> float:
        return sum(step.duration_s for step in self.steps)


def test_message(server, from_email: str, to_email: str) -> EmailMessage:
    return EmailMessage(
        subject=f"Relaydeck test message via {server.name or server.host}",
        body=f"This test message was sent by Relaydeck through {server.host}:{server.port} "
        f"at {timezone.now():%Y-%m-%d %H:%M:%S %Z}.\n",
        from_email=from_email,
        to=[to_email],
        headers=dict(server.custom_headers or []),
    )


def default_from_email(server) -> str:
    if "@" in server.username:
        return server.username
    return f"relaydeck@{server.helo_hostname or DNS_NAME}"


def probe(server, to_email: str = "", from_email: str = "") -> ProbeResult:
    """Open a session as `server` says and, given `to_email`, send one test message.

    Never raises for anything the server or network does, and never takes longer than
    the server's `send_timeout` in all.
    """
    result = ProbeResult()
    deadline = Deadline(server.send_timeout)
    smtp = None
    try:
        smtp = open_session(server, deadline, on_step=result.steps.append)
        runner = StepRunner(on_step=result.steps.append)
        if to_email:
            message = test_message(server, from_email or default_from_email(server), to_email)
            runner.run("MAIL FROM", lambda: smtp.mail(message.from_email), expect=(250,))
            runner.run("RCPT TO", lambda: smtp.rcpt(to_email), expect=(250, 251))
            runner.run("DATA", lambda: smtp.data(message.message().as_bytes(linesep="\r\n")), expect=(250,))
        runner.run("QUIT", smtp.quit, expect=(221,))
    except SmtpStepError as error:
        result.error = explain(error, server)
        result.raw_reply = f"{error.code} {error.text}".strip() if error.code else str(error.error)
    finally:
        if smtp is not None:
            smtp.close()
    return result
