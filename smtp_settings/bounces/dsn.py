"""Writing a delivery status notification (RFC 3464), as a receiving MTA does when it accepted
a message and then could not deliver it: how the sandbox bounces chosen recipients, so that
Relaydeck's own bounce handling can be tried end to end."""

from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesHeaderParser
from email.utils import formatdate, make_msgid


def notification(
    original: bytes,
    recipient: str,
    *,
    to: str,
    reporting_mta: str = "sandbox.relaydeck.test",
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 The email account that you tried to reach does not exist",
) -> bytes:
    """The DSN telling `to` (the original envelope sender) that `original` could not be
    delivered to `recipient`, with the original's headers returned."""
    action = "delayed" if status.startswith("4.") else "failed"
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = formatdate(localtime=False)
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"
    report.attach(
        MIMEText(f"Your message could not be delivered to {recipient}.\n\n{diagnostic}\n", "plain", "us-ascii")
    )
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    headers = MIMEBase("text", "rfc822-headers")
    headers.set_payload(BytesHeaderParser().parsebytes(original).as_string())
    report.attach(headers)
    return report.as_bytes(policy=report.policy.clone(linesep="\r\n"))  # as SMTP carries it
