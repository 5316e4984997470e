"""What ESPs' webhooks report about campaign mail besides bounces and complaints (those come
through `bounce_recorded`): a delivery delivered, a subscriber unsubscribed."""

from anymail.signals import EventType
from django.dispatch import receiver

from campaigns.models import Delivery, Subscriber
from smtp_settings.bounces import verp
from smtp_settings.webhooks.tracking import delivery_reported


@receiver(delivery_reported, dispatch_uid="campaigns.esp_reports")
def on_delivery_reported(sender, reference: str, email: str, outcome: str, at, **kwargs) -> None:
    """Delivered marks the delivery, unless a bounce or a complaint came first (and one that
    comes later wins); unsubscribed unsubscribes an active subscriber, as the link does."""
    if outcome == EventType.DELIVERED:
        if (pk := verp.number_of(reference, "d")) is not None:
            Delivery.objects.filter(pk=pk, outcome="").update(outcome=Delivery.Outcome.DELIVERED, outcome_at=at)
    elif outcome == EventType.UNSUBSCRIBED and email:
        Subscriber.objects.filter(email=email, status=Subscriber.Status.ACTIVE).update(
            status=Subscriber.Status.UNSUBSCRIBED, unsubscribed_at=at
        )
