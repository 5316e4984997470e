"""Demo data: a sandbox server entry that behaves like SES, a list of fake subscribers on the
reserved example.test domain, and a draft campaign to launch."""

import logging
from dataclasses import dataclass, field

from django.db import transaction

from campaigns.models import Campaign, MailingList, Subscriber
from smtp_settings.limit_stores import STORE_ERRORS
from smtp_settings.models import SmtpServer
from smtp_settings.presets import SANDBOX_PORT
from smtp_settings.shared_limits import forget_learned

log = logging.getLogger(__name__)

DEMO_SANDBOX_PORT = SANDBOX_PORT
SES_CAP = 350  # messages per session before the 421, as SES was seen to do
SANDBOX_CONNS = 20
DEMO_SANDBOX_OPTIONS = [
    f"--port={DEMO_SANDBOX_PORT}",
    f"--max-msgs-per-session={SES_CAP}",
    f"--max-conns={SANDBOX_CONNS}",
    "--pipelining",
]
SERVER_NAME = "Local sandbox (SES-like)"
LIST_NAME = "Demo subscribers"
CAMPAIGN_NAME = "Demo campaign"

HTML = """<h1>Hello {{ subscriber.name }}</h1>
<p>This is Relaydeck's demo campaign. The sandbox it goes to ends every session after 350
messages with SES's own <code>421 Maximum message count per session reached</code>: watch the
pool learn that cap and rotate connections before it.</p>
<p>Your city: {{ subscriber.attributes.city|default:"somewhere" }}.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromsø", "Adelaide"]
CHUNK = 2000
DEMO_SERVER = {
    "host": "127.0.0.1",
    "port": DEMO_SANDBOX_PORT,
    "tls": SmtpServer.Tls.NONE,
    "auth_protocol": SmtpServer.Auth.NONE,
    "max_conns": SANDBOX_CONNS,
    "max_msgs_per_conn": 0,  # let the pool find the cap from the 421s
    "idle_timeout": 15,
}


def _email(n: int) -> str:
    return f"reader{n:06d}@example.test"


@dataclass
class Demo:
    campaign: Campaign
    notes: list[str] = field(default_factory=list)  # what could not be made ready again, and why


def create_demo(subscribers: int) -> Demo:
    """Create the demo data, or make it ready to run again: safe to call any number of times.

    Tops the demo list up to `subscribers` (0: leaves it as it is). Unless the demo campaign is
    under way (scheduled, running or paused: returned as it is, and nothing else changes), a
    finished or cancelled demo campaign makes way for one fresh draft (an existing draft is
    kept), and the sandbox server entry forgets what its pools learned, so the next launch meets
    the sandbox's 421s again. Only campaigns the demo made are replaced (`is_demo`)."""
    with transaction.atomic():
        demo_campaigns = Campaign.objects.select_for_update().filter(is_demo=True)
        under_way = next((c for c in demo_campaigns.order_by("-pk") if c.status in Campaign.UNDER_WAY), None)
        if under_way is not None:
            return Demo(under_way)
        server, created = SmtpServer.objects.get_or_create(name=SERVER_NAME, defaults=DEMO_SERVER)
        unlearned = created or server.forget_learned_limits()
        mailing_list, _ = MailingList.objects.get_or_create(
            name=LIST_NAME, defaults={"description": "Fake subscribers on the reserved example.test domain."}
        )
        _add_subscribers(mailing_list, subscribers)
        campaign = demo_campaigns.filter(status=Campaign.Status.DRAFT).order_by("-pk").first()
        others = demo_campaigns.exclude(pk=campaign.pk if campaign else None)
        for pk in others.filter(status__in=Campaign.DELETABLE).values_list("pk", flat=True):
            _delete_if_deletable(pk)
        if campaign is None:
            campaign = Campaign.objects.create(
                name=CAMPAIGN_NAME,
                subject="Hello {{ subscriber.name }}, a demo from Relaydeck",
                from_email="Relaydeck demo <demo@example.test>",
                html_body=HTML,
                is_demo=True,
            )
            campaign.lists.add(mailing_list)
            campaign.servers.add(server)
    if not unlearned:
        kept = f"“{server.name}” kept the limits it learned: a campaign sending through it is under way."
        return Demo(campaign, [kept])
    return Demo(campaign, [] if created else _forget_shared(server))


def _delete_if_deletable(pk: int) -> bool:
    """Delete the campaign, with its deliveries, if it is a draft, finished or cancelled: its
    row is locked on that condition in one statement, so a launch (or a retry) racing this
    either changed it first, and it stays, or waits for this transaction and finds it gone."""
    campaign = Campaign.objects.select_for_update().filter(pk=pk, status__in=Campaign.DELETABLE).first()
    return campaign is not None and campaign.delete()[0] > 0


def finished_runs():
    """The demo campaigns that have run (finished or cancelled): what running it again replaces."""
    return Campaign.objects.filter(is_demo=True, status__in=(Campaign.Status.FINISHED, Campaign.Status.CANCELLED))


def can_run_again() -> bool:
    """The demo campaign has run, and no demo campaign is under way."""
    return (
        finished_runs().exists() and not Campaign.objects.filter(is_demo=True, status__in=Campaign.UNDER_WAY).exists()
    )


def _forget_shared(server: SmtpServer) -> list[str]:
    """What the cluster learned about the server, forgotten after the entry's commit: a store
    out of reach (Redis down) is said, not raised; the database's part stays done."""
    try:
        if forget_learned(server.pk):
            return []
        return [f"“{server.name}” met a throttle reply meanwhile: its lowered rate stays until it recovers."]
    except STORE_ERRORS as error:
        log.warning("server %s: could not reset the shared limits", server.pk, exc_info=True)
        return [
            f"The shared limits store is out of reach ({type(error).__name__}): the cluster may remember a lowered "
            f"connection ceiling or rate for “{server.name}” until it recovers; run the demo again once it is back."
        ]


def _add_subscribers(mailing_list: MailingList, subscribers: int) -> None:
    for start in range(1, subscribers + 1, CHUNK):
        numbers = range(start, min(start + CHUNK, subscribers + 1))
        Subscriber.objects.bulk_create(
            [Subscriber(email=_email(n), name=f"Reader {n}", attributes={"city": CITIES[n % 6]}) for n in numbers],
            ignore_conflicts=True,
        )
        ids = Subscriber.objects.filter(email__in=[_email(n) for n in numbers]).values_list("pk", flat=True)
        Subscriber.lists.through.objects.bulk_create(
            [Subscriber.lists.through(subscriber_id=pk, mailinglist_id=mailing_list.pk) for pk in ids],
            ignore_conflicts=True,
        )
