"""Taking a report in (from the SMTP listener or a bounce mailbox): read it, and record a
bounce, complaint or delay warning for each address it names, or keep it as not understood.

The delivery a finding is about comes from the VERP address the report was sent to (the
listener's envelope recipients) or one found inside it (parse.py). A report about one address
whose token names a delivery is attributed to that delivery; without a token, only the
address counts (the suppression list), with no delivery to mark.
"""

from collections.abc import Iterable

from smtp_settings.bounces import parse, verp
from smtp_settings.bounces.record import record
from smtp_settings.models import Bounce, BounceMailbox


def take(
    data: bytes, source: str, envelope_recipients: Iterable[str] = (), mailbox: BounceMailbox | None = None
) -> list[Bounce]:
    """Record what the report `data` says; the Bounce rows written (at least one)."""
    report = parse.read(data)
    references = [ref for ref in map(verp.reference_of, envelope_recipients) if ref] + report.references
    reference = references[0] if references else ""
    if not report.findings:
        return [
            record(
                Bounce.Kind.UNPARSED, source, report=data, reference=reference, mailbox=mailbox, problem=report.problem
            )
        ]
    return [
        record(
            finding.kind,
            source,
            finding.email,
            report=data,
            reference=reference,
            mailbox=mailbox,
            code=finding.code,
            status=finding.status,
            text=finding.text,
        )
        for finding in report.findings
    ]
