"""What becomes of campaigns when one of their servers is deleted (smtp_settings/deletion.py).

- A campaign under way (scheduled, running or paused) holds its servers: the deletion is
  refused. Pausing is not enough, since it may be resumed; disabling the server is the way to
  stop using it at once.
- A campaign that sent (finished, or cancelled after it started) keeps the server's name in
  `deleted_servers`, so its page still says what it went out through.
- A draft (or one cancelled before it started) has the server taken off its list; the launch
  asks for an enabled server if none is left.

The check runs in the deleting transaction with the campaigns' rows locked: a launch racing it
either commits first, and is seen running, or waits until the server is gone from its list
(and a campaign left with no server pauses itself, saying so).
"""

from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.urls import reverse

from campaigns.models import Campaign
from smtp_settings.deletion import ServerInUse, ServerUser, server_users
from smtp_settings.models import SmtpServer


def _user(campaign: Campaign) -> ServerUser:
    status = campaign.get_status_display()
    if campaign.status in Campaign.UNDER_WAY:
        state, busy = f"{status}: the server stays until it is over", True
    elif campaign.started_at:
        state, busy = f"{status}: it keeps the server's name", False
    else:
        state, busy = f"{status}: the server is taken off its list", False
    return ServerUser("Campaign", campaign.name, reverse("campaigns:detail", args=[campaign.pk]), state, busy)


@receiver(server_users, dispatch_uid="campaigns.servers.users")
def campaigns_using(sender, server: SmtpServer, **kwargs) -> list[ServerUser]:
    return [_user(campaign) for campaign in Campaign.objects.filter(servers=server).order_by("-created_at")]


@receiver(pre_delete, sender=SmtpServer, dispatch_uid="campaigns.servers.deleting")
def keep_the_name_or_refuse(sender, instance: SmtpServer, **kwargs) -> None:
    using = list(Campaign.objects.select_for_update(of=("self",)).filter(servers=instance).order_by("pk"))
    busy = [_user(campaign) for campaign in using if campaign.status in Campaign.UNDER_WAY]
    if busy:
        raise ServerInUse(instance, busy)
    for campaign in using:
        if campaign.started_at and instance.name not in campaign.deleted_servers:
            names = [*campaign.deleted_servers, instance.name]
            Campaign.objects.filter(pk=campaign.pk).update(deleted_servers=names)
