"""Reading a bounce or a complaint report: which addresses failed, for good or for now, or
which address complained, and which delivery it was about.

- Complaints: an ARF report (RFC 5965), multipart/report with report-type=feedback-report.
  Its machine-readable part names the original recipient and the original envelope sender,
  which is our VERP address when the message went out with one.
- Bounces: flufl.bounce's detectors (GNU Mailman's), for RFC 3464 DSNs and the dozens of
  formats real MTAs send instead. flufl.bounce says which addresses failed for good and which
  for now (delay warnings). A DSN also says why, per recipient, in its delivery-status part:
  its Status and Diagnostic-Code, read with the email package, class a failure as hard (about
  the address, by the rule used at send time: classify.py) or soft (anything else that failed:
  a full mailbox, a policy block); a failure in another format, which says no code, counts as
  hard, as it does for Mailman.
- The delivery: a VERP address (bounces+<token>@<domain>) anywhere a report carries the
  original envelope sender or recipient: the envelope recipient of the report itself (the
  listener knows it; in a mailbox, Delivered-To or X-Original-To tell), or the returned
  message's Return-Path, or ARF's Original-Mail-From.

A report that says nothing usable is not an error here: `read` returns no findings and the
problem, and the caller keeps the report.
"""

from dataclasses import dataclass, field
from email import message_from_bytes
from email.iterators import typed_subpart_iterator
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from smtp_settings.bounces import verp
from smtp_settings.bounces.classify import about_the_address
from smtp_settings.events import REPLY_CODE as _REPLY_CODE
from smtp_settings.models import Bounce
from smtp_settings.validators import one_line

# Headers of the report, and of the message it returns, that may carry a VERP address.
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to", "return-path")


@dataclass(frozen=True)
class Finding:
    kind: str  # Bounce.Kind
    email: str
    status: str = ""  # the enhanced status code, "5.1.1"
    text: str = ""  # the diagnostic, as the reporting server wrote it

    @property
    def code(self) -> int | None:
        """The SMTP reply code the diagnostic starts with, if it does."""
        return int(self.text[:3]) if _REPLY_CODE.match(self.text) else None


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # VERP references found inside it
    problem: str = ""  # why there are no findings


def read(data: bytes) -> Report:
    """What the report `data` says (see the module docstring)."""
    message = message_from_bytes(data)
    report = Report(references=_references(message))
    if complaint := _complaint(message):
        report.findings.append(complaint)
        return report
    try:
        temporary, permanent = all_failures(message)
    except Exception as error:  # a detector tripped over a malformed message
        report.problem = f"The bounce detectors could not read it ({type(error).__name__})."
        return report
    reasons = _dsn_reasons(message)
    for address in sorted(permanent):
        email = one_line(address.decode("ascii", "replace"))
        status, text = reasons.get(email.lower(), ("", ""))
        report.findings.append(Finding(kind_of_failure(status, text), email, status, text))
    for address in sorted(temporary - permanent):
        email = one_line(address.decode("ascii", "replace"))
        status, text = reasons.get(email.lower(), ("", ""))
        report.findings.append(Finding(Bounce.Kind.DELAYED, email, status, text))
    if not report.findings:
        report.problem = "No bounced or complaining address found in it."
    return report


def kind_of_failure(status: str, text: str) -> str:
    """A failure a report gives up on: hard when it is about the address (the rule at send
    time, classify.py) or says no code at all; soft for anything else."""
    return Bounce.Kind.HARD if not status or about_the_address(status, text) else Bounce.Kind.SOFT


def _complaint(message: Message) -> Finding | None:
    """The complaint an ARF report makes, if it is one."""
    if message.get_content_type() != "multipart/report" or message.get_param("report-type") != "feedback-report":
        return None
    fields = _feedback_fields(message)
    if fields is None:
        return None
    recipient = parseaddr(fields.get("original-rcpt-to", ""))[1]
    if not recipient:  # many providers redact it: the returned message's To may still tell
        returned = next(typed_subpart_iterator(message, "message", "rfc822"), None)
        inner = returned.get_payload(0) if returned is not None and returned.is_multipart() else None
        recipient = parseaddr(inner.get("to", ""))[1] if inner is not None else ""
    feedback_type = one_line(str(fields.get("feedback-type", "abuse")))
    return Finding(Bounce.Kind.COMPLAINT, one_line(recipient), "", f"Feedback-Type: {feedback_type}")


def _feedback_fields(message: Message) -> Message | None:
    part = next(typed_subpart_iterator(message, "message", "feedback-report"), None)
    if part is None:
        return None
    if part.is_multipart():
        return part.get_payload(0)
    payload = part.get_payload(decode=True) or b""  # sent with a transfer encoding
    return BytesHeaderParser().parsebytes(payload)


def _dsn_reasons(message: Message) -> dict[str, tuple[str, str]]:
    """Each failed recipient of a DSN (lower-cased) and its (Status, Diagnostic-Code)."""
    reasons = {}
    for part in typed_subpart_iterator(message, "message", "delivery-status"):
        if not part.is_multipart():
            continue
        for block in part.get_payload():
            status = one_line(str(block.get("status", ""))).split(" ")[0][:16]
            diagnostic_type, typed, diagnostic = one_line(str(block.get("diagnostic-code", ""))).partition(";")
            diagnostic = diagnostic if typed else diagnostic_type  # "smtp; 550 5.1.1 ...", or untyped
            for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
                _, _, address = one_line(str(block.get(name, ""))).partition(";")
                if address := parseaddr(address.strip())[1]:
                    reasons.setdefault(address.lower(), (status, diagnostic.strip()))
    return reasons


def _references(message: Message) -> list[str]:
    """VERP references in the report's headers, its feedback fields or its returned message."""
    found = []
    messages = [message]
    if (fields := _feedback_fields(message)) is not None:
        messages.append(fields)
    for returned in typed_subpart_iterator(message, "message", "rfc822"):
        if returned.is_multipart():
            messages.append(returned.get_payload(0))
    for headers in typed_subpart_iterator(message, "text", "rfc822-headers"):
        messages.append(BytesHeaderParser().parsebytes(headers.get_payload(decode=True) or b""))
    for part in messages:
        for name in (*ENVELOPE_HEADERS, "original-mail-from"):
            for _, address in getaddresses([str(value) for value in part.get_all(name, [])]):
                if (reference := verp.reference_of(address)) and reference not in found:
                    found.append(reference)
    return found
