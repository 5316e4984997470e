"""What campaigns make of a bounce or a complaint.

A report may act only on the addresses its message went to: smtp_settings asks, through
`reference_recipients`, whom a delivery "d<id>" went to; the answer is its subscriber's address.

smtp_settings/bounces/record.py sends `bounce_recorded` inside the transaction that records a
bounce it acts on (and suppresses the address):

- With a reference "d<id>" (a campaign delivery, from VERP or from the sender at send time):
  the delivery's outcome, the subscriber's status, and the campaign's counter, moved by a
  conditional UPDATE, once per delivery (a second report about it counts nothing), then its
  guard rails. The logged event names the campaign.
- Without one (or for a delivery since deleted), with an address: the subscriber's status only.

A stronger outcome is never replaced by a weaker one (complained, bounced, soft, delivered).
The subscriber becomes bounced on a hard bounce, or on a soft one once the address is
suppressed for repeated soft bounces; complained on a complaint. Only an active subscriber
changes: one who unsubscribed or was blocklisted keeps that status.
"""

from django.db.models import F
from django.dispatch import receiver
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Subscriber
from campaigns.sending.loop import auto_pause
from smtp_settings.bounces import verp
from smtp_settings.bounces.recipients import reference_recipients
from smtp_settings.bounces.record import bounce_recorded
from smtp_settings.models import Bounce, Suppression

Outcome, Kind = Delivery.Outcome, Bounce.Kind
_OUTCOME = {Kind.HARD: Outcome.BOUNCED, Kind.SOFT: Outcome.SOFT_BOUNCE, Kind.COMPLAINT: Outcome.COMPLAINED}
_STRONGEST_FIRST = [Outcome.COMPLAINED, Outcome.BOUNCED, Outcome.SOFT_BOUNCE, Outcome.DELIVERED, ""]
_COUNTER = {Kind.HARD: "hard_bounces", Kind.COMPLAINT: "complaints"}


@receiver(bounce_recorded, dispatch_uid="campaigns.bounces")
def on_bounce(sender, bounce: Bounce, **kwargs) -> dict | None:
    outcome = _OUTCOME.get(bounce.kind)
    if outcome is None:  # a report not understood: nothing to act on
        return None
    delivery = _delivery(bounce.reference)
    if delivery is None:
        if bounce.email:
            _mark_subscriber(Subscriber.objects.filter(email=bounce.email), bounce)
        return None
    campaign_id = delivery["campaign_id"]
    _mark_subscriber(Subscriber.objects.filter(pk=delivery["subscriber_id"]), bounce)
    weaker = _STRONGEST_FIRST[_STRONGEST_FIRST.index(outcome) + 1 :]
    changed = Delivery.objects.filter(pk=delivery["pk"], outcome__in=weaker).update(
        outcome=outcome, outcome_at=timezone.now()
    )
    counter = _COUNTER.get(bounce.kind)
    if changed and counter:
        Campaign.objects.filter(pk=campaign_id).update(**{counter: F(counter) + 1})
        _check_guard_rails(campaign_id)
    return {"campaign_id": campaign_id}


@receiver(reference_recipients, dispatch_uid="campaigns.bounces.recipients")
def delivery_recipient(sender, reference: str, **kwargs) -> list[str] | None:
    delivery = _delivery(reference, "subscriber__email")
    return [delivery["subscriber__email"]] if delivery else None


def _delivery(reference: str, *fields: str) -> dict | None:
    pk = verp.number_of(reference, "d")
    if pk is None:
        return None
    return Delivery.objects.filter(pk=pk).values("pk", "campaign_id", "subscriber_id", *fields).first()


def _mark_subscriber(subscribers, bounce: Bounce) -> None:
    if bounce.kind == Kind.COMPLAINT:
        status = Subscriber.Status.COMPLAINED
    elif bounce.kind == Kind.HARD or (
        Suppression.objects.filter(email=bounce.email, reason=Suppression.Reason.SOFT_BOUNCES).exists()
    ):
        status = Subscriber.Status.BOUNCED
    else:
        return
    subscribers.filter(status=Subscriber.Status.ACTIVE).update(status=status, unsubscribed_at=timezone.now())


# Messages each campaign is known to have sent, as last counted in this process (the number
# only grows): a bounce needs no count while its counter cannot pass its limit over it.
_sent_at_least: dict[int, int] = {}


def _check_guard_rails(campaign_id: int) -> None:
    """Right after a counter moved (its row is locked until the bounce's transaction ends,
    so concurrent bounces check one after the other, each seeing the others' counts)."""
    campaign = Campaign.objects.get(pk=campaign_id)
    if not campaign.is_running:
        return
    reason, _sent_at_least[campaign_id] = campaign.guard_rail_crossed(_sent_at_least.get(campaign_id, 0))
    if reason:
        auto_pause(campaign, reason)
