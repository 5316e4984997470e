"""Taking a report in (from the SMTP listener or a bounce mailbox): read it, attribute what it
says to the messages it is about, and record it, or keep it as not understood.

A report may act only on the addresses its message went to. The message comes from a VERP
address, signed (verp.py): the report's envelope recipients (the listener knows them) first,
then any found inside it (parse.py). Whoever holds one, a recipient of that message or a
server it passed through, may report on that message's recipients (recipients.py), and on
nobody else. So:

- a finding about one of the recipients of a reference is recorded for that reference, and
  acted on (record.py: suppression, the delivery's outcome); with several references, each
  finding goes to the one whose recipients include its address;
- a finding whose address is blank or not plausible (many providers redact the recipient of a
  complaint) is about the recipient when the references name exactly one; otherwise dropped;
- a report whose findings name none of the recipients, or that carries no valid token at all
  (a mailbox of a server without a bounce domain), is recorded once, as it was found but not
  acted on, with why; the addresses a report names beside its recipients are noted the same
  way on its first bounce.

Bounded: at most MAX_FINDINGS bounces a report (the rest noted on the first), and the raw
report is stored once, on the first; the others point at it (`report_of`). Reading, the
costly part, happens before the caller takes the database's write lock: `read()`, then the
reading's `record()` in the caller's transaction.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from smtp_settings.bounces import parse, verp
from smtp_settings.bounces.recipients import recipients_of
from smtp_settings.bounces.record import record
from smtp_settings.models import Bounce, BounceMailbox, Suppression
from smtp_settings.validators import address_problem, shown

MAX_FINDINGS = 100  # bounces recorded for one report
NAMED = 3  # addresses a note names, before "and N more"


@dataclass
class Reading:
    """A report, read and attributed: what `record()` writes."""

    data: bytes
    findings: list[tuple[parse.Finding, str]] = field(default_factory=list)  # each with its reference
    acted_on: bool = True
    reference: str = ""  # the first of its references: of a report not understood, or not acted on
    problem: str = ""  # said on the first bounce
    size: int | None = None  # of a report of which `data` is only the start

    def record(self, source: str, mailbox: BounceMailbox | None = None) -> list[Bounce]:
        """Record the report: one bounce a finding, the first with the report (at least one)."""
        if not self.findings:
            return [
                record(
                    Bounce.Kind.UNPARSED,
                    source,
                    report=self.data,
                    report_size=self.size,
                    act=False,
                    reference=self.reference,
                    mailbox=mailbox,
                    problem=self.problem,
                )
            ]
        bounces: list[Bounce] = []
        for finding, reference in self.findings:
            first = bounces[0] if bounces else None
            bounces.append(
                record(
                    finding.kind,
                    source,
                    finding.email,
                    report=b"" if first else self.data,
                    act=self.acted_on,
                    report_of=first,
                    reference=reference,
                    mailbox=mailbox,
                    code=finding.code,
                    status=finding.status,
                    text=finding.text,
                    problem="" if first else self.problem,
                )
            )
        return bounces


def read(data: bytes, envelope_recipients: Iterable[str] = (), size: int | None = None) -> Reading:
    """Read the report `data` (sent to `envelope_recipients`; the first bytes of one of `size`
    bytes, if it was cut) and attribute what it says (see the module docstring)."""
    if size is not None and size > len(data):
        problem = f"The message is {size:,} bytes; only its first {len(data):,} were read."
        return Reading(data, size=size, problem=problem)
    report = parse.read(data)
    references = list(dict.fromkeys([*filter(None, map(verp.reference_of, envelope_recipients)), *report.references]))
    reading = Reading(data, reference=references[0] if references else "", problem=report.problem)
    if not report.findings:
        return reading
    recipients = {reference: recipients_of(reference) for reference in references}
    pairs = {(reference, email) for reference, emails in recipients.items() for email in emails}
    acted, others, dropped = [], [], []
    for finding in report.findings:
        email = Suppression.normalize(finding.email)
        if not _plausible(email) and len(pairs) == 1:
            email = next(iter(pairs))[1]  # a redacted recipient: the one its message went to
        if not _plausible(email):
            dropped.append(finding)
            continue
        finding = replace(finding, email=email)
        owner = next((reference for reference in references if email in recipients[reference]), None)
        if owner:
            acted.append((finding, owner))
        else:
            others.append(finding)
    if not acted:  # recorded once, as found
        reading.acted_on = False
        reading.findings = [(others[0] if others else replace(dropped[0], email=""), reading.reference)]
        reading.problem = f"{_why_not(references, pairs, others, dropped)}: kept, not acted on."
        return reading
    reading.findings = acted[:MAX_FINDINGS]
    notes = []
    if others:
        notes.append(f"It also names {_names(others)}, which its delivery did not go to: not acted on.")
    if dropped:
        notes.append(f"Not valid addresses, left out: {_names(dropped)}.")
    if len(acted) > MAX_FINDINGS:
        notes.append(f"Only the first {MAX_FINDINGS} of its {len(acted):,} findings were recorded.")
    reading.problem = " ".join(notes)
    return reading


def _why_not(references: list[str], pairs: set, others: list, dropped: list) -> str:
    if not others:
        return f"It names no valid address ({_names(dropped)})"
    if not references:
        return "No VERP token names its delivery"
    if not pairs:  # its messages are gone, or never were
        return f"Its delivery ({', '.join(references[:NAMED])}) is not known here"
    return f"It names {_names(others)}, which its delivery did not go to"


def _plausible(email: str) -> bool:
    return "\ufffd" not in email and address_problem(email) is None


def _names(findings: list[parse.Finding]) -> str:
    """The first NAMED addresses of these findings, and how many more."""
    named = ", ".join(
        finding.email if _plausible(finding.email) else repr(shown(finding.email)) for finding in findings[:NAMED]
    )
    return named + (f" and {len(findings) - NAMED:,} more" if len(findings) > NAMED else "")
