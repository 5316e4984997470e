"""The watchdog: scheduled launches, campaigns nobody sends, rows nobody holds.

Run every minute (see `setup_schedules`) and when a worker starts.
"""

from django.db.models import Q
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from campaigns.models import Campaign, Delivery
from campaigns.sending import leases
from campaigns.sending.loop import start_senders
from campaigns.sending.recovery import recover_orphans
from smtp_settings.models import SmtpServer


def watchdog() -> None:
    now = timezone.now()
    for campaign in Campaign.objects.filter(status=Campaign.Status.SCHEDULED, scheduled_at__lte=now):
        campaign.launch()
    stalled = Campaign.objects.filter(
        Q(status=Campaign.Status.RUNNING) | Q(deliveries__status=Delivery.Status.SENDING)
    ).distinct()
    for campaign in stalled:
        if campaign.status != Campaign.Status.RUNNING:
            recover_orphans(campaign)  # paused or cancelled with a dead sender's rows in flight
        elif (not campaign.waiting_until or campaign.waiting_until <= now) and not leases.live_senders(campaign, now):
            Campaign.objects.filter(pk=campaign.pk).update(senders_asked=0)  # those tasks are lost or late
            start_senders(campaign)  # it starts the others its servers can use


@receiver(post_save, sender=SmtpServer, dispatch_uid="campaigns.sending.server_saved")
def _look_again_after_an_edit(sender, instance, **kwargs) -> None:
    """A campaign waiting for one of its servers' quota windows may have room after an edit
    (a larger quota, a server enabled): the watchdog looks again at its next round."""
    Campaign.objects.filter(servers=instance, status=Campaign.Status.RUNNING).exclude(waiting_until=None).update(
        waiting_until=timezone.now()
    )
