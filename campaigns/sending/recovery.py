"""What becomes of deliveries a sender left in `sending` when it died or lost its lease.

Any sender runs this when it joins and when it finds nothing left to claim, and so does the
watchdog. First the dead senders are fenced off: a lease that ran out, or whose holder was a
process on this host that no longer exists (a restarted worker's rows go back at once, not
after the lease). Then each row still claimed under a sender that is not live is decided by
one conditional UPDATE, which also clears its claim, so a woken-up sender can change nothing:
- no `final_dot_at`: the server cannot hold it; back to pending;
- past its final dot: CAMPAIGN_AMBIGUOUS_POLICY decides: "sent" flags it `ambiguous` (no
  duplicate, the default), "resend" sends it again (no loss).
"""

import logging

from django.conf import settings
from django.db.models import Q

from campaigns import eventlog
from campaigns.models import Campaign, Delivery
from smtp_settings.events import Kind
from smtp_settings.leases import fence_off_dead, settle_orphans

log = logging.getLogger(__name__)
Status = Delivery.Status


def recover_orphans(campaign: Campaign) -> int:
    """Decide the fate of deliveries whose sender is no longer live; returns how many went
    back in line."""
    fence_off_dead(campaign.senders.all())
    live = campaign.senders.exclude(lease_until=None).values("pk")
    orphans = campaign.deliveries.filter(status=Status.SENDING).exclude(Q(claim_token__in=live))
    maybe, never = settle_orphans(orphans, Status.PENDING, claimed_at=None)
    if maybe:
        eventlog.record_campaign_event(
            campaign,
            Kind.AMBIGUOUS,
            f"{maybe} deliveries had gone past their final dot when their sender stopped: "
            + ("counted as sent." if settings.CAMPAIGN_AMBIGUOUS_POLICY == "sent" else "sent again."),
            deliveries=maybe,
            policy=settings.CAMPAIGN_AMBIGUOUS_POLICY,
        )
    if maybe or never:
        log.warning("campaign %s: recovered %s unsent and %s ambiguous deliveries", campaign.pk, never, maybe)
    back = never + (maybe if settings.CAMPAIGN_AMBIGUOUS_POLICY == "resend" else 0)
    if back and Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.CANCELLED).exists():
        campaign.drop_unsent()
    return back
