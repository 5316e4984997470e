"""Which addresses a message went to, by its sender's reference: all that a report about it
may act on (intake.py).

"o<id>" is an outbox message: its envelope recipients. Any other reference is for its sender
to answer, through `reference_recipients` (campaigns answer "d<id>" with the delivery's
subscriber address): this app does not know campaigns.
"""

from django.dispatch import Signal

from smtp_settings.bounces import verp
from smtp_settings.models import Bounce, OutboxMessage, Suppression

# Sent with reference=str; a receiver returns the addresses the message went to, or None.
reference_recipients = Signal()


def recipients_of(reference: str) -> set[str]:
    """The addresses the message `reference` names went to, normalized (none if it is gone)."""
    found: list[str] = []
    if (pk := verp.number_of(reference, "o")) is not None:
        for recipients in OutboxMessage.objects.filter(pk=pk).values_list("recipients", flat=True):
            found.extend(recipients)
    for _, answer in reference_recipients.send(sender=Bounce, reference=reference):
        found.extend(answer or ())
    return {Suppression.normalize(address) for address in found if isinstance(address, str)}
