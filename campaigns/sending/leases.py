"""Senders' leases on a campaign, the deliveries they claim, and the fence at each final dot.

Several senders (django-q2 tasks, on any hosts) send one campaign at once:
- A task *joins* the campaign: a `Sender` row whose id is its fencing token, while the
  campaign has fewer live senders than its servers can use (`senders_wanted`).
- A `SenderKeeper` thread renews the lease every third of CAMPAIGN_LEASE_S for as long as the
  task lives, however long a batch takes, and watches the campaign twice a second, so pause,
  cancel and auto-pause reach every sender between two messages.
- A lease that ran out is never renewed: a sender stopped (SIGSTOP), slowed or cut off past
  it has lost its claims for good, and recovery may hand them to others.
- Claims are single UPDATEs under the sender's token; on PostgreSQL the rows to take are
  chosen `FOR UPDATE SKIP LOCKED`, so concurrent claims never wait on each other nor take
  the same row. SQLite runs one writer at a time (its write lock; within a process, queued
  on `one_writer`).
- The fence (`FINAL_DOT`) is what makes a duplicate impossible, whatever the timing: a final
  dot goes out only for a row still claimed under this sender's token, while its lease
  stands, the campaign is running and the batch's server is enabled.

The keeper's thread, the fence's hook and the generic half of recovery are shared with the
outbox's senders (smtp_settings/leases.py).
"""

import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Sender
from project.sqlite_writes import one_writer
from smtp_settings import processes
from smtp_settings.leases import LeaseKeeper, db_time, live
from smtp_settings.models import SmtpServer, Suppression
from smtp_settings.shared_limits import configured_rate

CONNECTIONS_PER_SENDER = 2  # a sender with fewer connections than this is better merged with another
RATE_PER_SENDER = 500  # messages per second one sender process keeps up with, with room to spare


@dataclass(frozen=True)
class Lease:
    """A sender's hold on a campaign; `token` is its Sender row's id."""

    campaign_id: int
    token: int


def senders_wanted(campaign: Campaign) -> int:
    """How many senders the campaign's enabled servers can keep busy: one per couple of
    connections (four senders for one connection help nobody), fewer when a rate caps the whole
    campaign low, at most CAMPAIGN_MAX_SENDERS."""
    servers = list(campaign.servers.filter(enabled=True))
    if not servers:
        return 1
    connections = sum(min(s.max_conns, s.learned_max_conns or s.max_conns) for s in servers)
    wanted = min(settings.CAMPAIGN_MAX_SENDERS, math.ceil(connections / CONNECTIONS_PER_SENDER))
    rates = [configured_rate(s) for s in servers]
    rate = sum(rates) if all(rates) else 0
    if campaign.rate_limit:
        rate = min(rate, campaign.rate_limit) if rate else campaign.rate_limit
    if rate:
        wanted = min(wanted, math.ceil(rate / RATE_PER_SENDER))
    return max(1, wanted)


def live_senders(campaign: Campaign, now=None) -> int:
    now = now or timezone.now()
    owners = campaign.senders.filter(lease_until__gt=now).values_list("owner", flat=True)
    return live(owners)


def join(campaign_id: int) -> Lease | None:
    """Become one of the campaign's senders; None if it is not running or has all the senders
    it can use. (The campaign row is locked meanwhile, so concurrent joins count right.)"""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
        if campaign is None or campaign.status != Campaign.Status.RUNNING:
            return None
        now = timezone.now()
        if live_senders(campaign, now) >= senders_wanted(campaign):
            return None
        until = now + timedelta(seconds=settings.CAMPAIGN_LEASE_S)
        sender = Sender.objects.create(campaign=campaign, owner=processes.me(), lease_until=until)
    return Lease(campaign_id, sender.pk)


def renew(lease: Lease) -> bool:
    """Extend the lease; False if it ran out or was fenced off (it is never revived)."""
    now = timezone.now()
    until = now + timedelta(seconds=settings.CAMPAIGN_LEASE_S)
    return Sender.objects.filter(pk=lease.token, lease_until__gt=now).update(lease_until=until) == 1


def release(lease: Lease, sent: int) -> None:
    now = timezone.now()
    Sender.objects.filter(pk=lease.token).update(lease_until=None, stopped_at=now, sent=sent)


class SenderKeeper(LeaseKeeper):
    """A campaign sender's watch (see smtp_settings.leases.LeaseKeeper): renews the lease and
    looks at the campaign every WATCH_S. `stop` is set when the sender must take no more
    messages: the campaign is no longer running (paused, cancelled, auto-paused) or the lease
    is lost. `servers` holds the ids of the campaign's enabled servers, as last seen;
    `failures_seen` says a failure streak may be running (set here, cleared by a success)."""

    def __init__(self, lease: Lease):
        super().__init__(f"sender-{lease.token}", settings.CAMPAIGN_LEASE_S)
        self.lease = lease
        self.failures_seen = False  # the campaign's failure streak was above 0 at the last look
        self.servers: set[int] = set()
        # Built once: building a query through the many-to-many costs more than running it.
        self._campaign = Campaign.objects.filter(pk=lease.campaign_id).values("status", "consecutive_failures")
        enabled = SmtpServer.objects.filter(enabled=True, campaigns=lease.campaign_id)
        self._enabled = enabled.values_list("pk", flat=True)

    def renew(self) -> bool:
        return renew(self.lease)

    def look(self) -> None:
        row = next(iter(self._campaign.all()), None)
        if row is None or row["status"] != Campaign.Status.RUNNING:
            self.stop.set()
            return
        if row["consecutive_failures"] > 0:  # never cleared here: a sending thread's news is newer
            self.failures_seen = True
        self.servers = set(self._enabled.all())


def claim(lease: Lease, size: int) -> list[int]:
    """Claim up to `size` deliveries, pending first, then deferred ones whose time has come;
    returns their ids (none if the lease is gone or the campaign stopped)."""
    now = timezone.now()
    params = [db_time(now), lease.token, lease.campaign_id]
    sql = _CLAIM_SKIP_LOCKED if connection.vendor == "postgresql" else _CLAIM
    with one_writer(), connection.cursor() as cursor:
        cursor.execute(sql.format(which="status = 'pending'"), [*params, size, lease.token, db_time(now)])
        ids = [row[0] for row in cursor.fetchall()]
        if len(ids) < size:
            due = "status = 'deferred' AND next_attempt_at <= %s"
            cursor.execute(sql.format(which=due), [*params, db_time(now), size - len(ids), lease.token, db_time(now)])
            ids += [row[0] for row in cursor.fetchall()]
    return sorted(ids)


def claimed(lease: Lease, ids: list[int]) -> list[Delivery]:
    """The claimed deliveries with their subscribers, each with `suppressed`: whether the
    subscriber's address is on the suppression list now (in the same query)."""
    mine = Delivery.objects.filter(id__in=ids, status=Delivery.Status.SENDING, claim_token=lease.token)
    suppressed = Exists(Suppression.objects.filter(email=OuterRef("subscriber__email")))
    return list(mine.select_related("subscriber").annotate(suppressed=suppressed).order_by("id"))


# A claim and a final dot both require a live sender (lease standing) of a running campaign.
_CLAIM = (
    "UPDATE campaigns_delivery SET status = 'sending', claimed_at = %s, final_dot_at = NULL, claim_token = %s"
    " WHERE id IN (SELECT id FROM campaigns_delivery WHERE campaign_id = %s AND {which} ORDER BY id LIMIT %s)"
    " AND EXISTS (SELECT 1 FROM campaigns_sender s JOIN campaigns_campaign c ON c.id = s.campaign_id"
    " WHERE s.id = %s AND s.lease_until > %s AND c.status = 'running') RETURNING id"
)
_CLAIM_SKIP_LOCKED = _CLAIM.replace("LIMIT %s)", "LIMIT %s FOR UPDATE SKIP LOCKED)")
# The fence: a final dot may go out only for a row this sender claimed, while its lease stands,
# the campaign runs and the server is enabled. The same statement records that the thread's
# previous message (`previous`, or none) was accepted, where our claim on it still stands: one
# round trip, no transaction to open. RETURNING says which rows it changed.
FINAL_DOT = (
    "UPDATE campaigns_delivery SET"
    " final_dot_at = CASE WHEN id = %(current)s THEN %(now)s ELSE final_dot_at END,"
    " status = CASE WHEN id = %(previous)s THEN 'sent' ELSE status END,"
    " sent_at = CASE WHEN id = %(previous)s THEN %(now)s ELSE sent_at END,"
    " last_code = CASE WHEN id = %(previous)s THEN %(code)s ELSE last_code END,"
    " last_reply = CASE WHEN id = %(previous)s THEN %(reply)s ELSE last_reply END,"
    " ambiguous = CASE WHEN id = %(previous)s THEN %(ambiguous)s ELSE ambiguous END"
    " WHERE status = 'sending' AND claim_token = %(token)s AND (id = %(previous)s OR (id = %(current)s"
    " AND EXISTS (SELECT 1 FROM campaigns_sender s JOIN campaigns_campaign c ON c.id = s.campaign_id"
    " WHERE s.id = %(token)s AND s.lease_until > %(now)s AND c.status = 'running')"
    " AND EXISTS (SELECT 1 FROM smtp_settings_smtpserver WHERE id = %(server)s AND enabled)))"
    " RETURNING id"
)
