"""Demo data: a sandbox server entry that behaves like SES, a list of fake subscribers on the
reserved example.test domain, and a draft campaign to launch."""

from django.db import transaction

from campaigns.models import Campaign, MailingList, Subscriber
from smtp_settings import sandbox
from smtp_settings.models import SmtpServer
from smtp_settings.shared_limits import forget_learned

DEMO_SANDBOX_PORT = sandbox.PORT
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
UNLEARNED = {
    "learned_msgs_per_conn": None,
    "learned_msgs_per_conn_at": None,
    "learned_max_conns": None,
    "learned_max_conns_at": None,
}


def _email(n: int) -> str:
    return f"reader{n:06d}@example.test"


@transaction.atomic
def create_demo(subscribers: int) -> Campaign:
    """Create the demo data, or make it ready to run again: safe to call any number of times.

    Tops the demo list up to `subscribers` (0: leaves it as it is). Unless the demo campaign is
    under way (scheduled, running or paused: returned as it is, and nothing else changes), a
    finished or cancelled demo campaign makes way for one fresh draft (an existing draft is
    kept), and the sandbox server entry forgets what its pools learned, so the next launch meets
    the sandbox's 421s again."""
    demo_campaigns = Campaign.objects.select_for_update().filter(name=CAMPAIGN_NAME)
    under_way = next((c for c in demo_campaigns.order_by("-pk") if c.status in Campaign.UNDER_WAY), None)
    if under_way is not None:
        return under_way
    server, created = SmtpServer.objects.get_or_create(name=SERVER_NAME, defaults=DEMO_SERVER | UNLEARNED)
    if not created:
        _unlearn(server)
    mailing_list, _ = MailingList.objects.get_or_create(
        name=LIST_NAME, defaults={"description": "Fake subscribers on the reserved example.test domain."}
    )
    _add_subscribers(mailing_list, subscribers)
    campaign = Campaign.objects.filter(name=CAMPAIGN_NAME, status=Campaign.Status.DRAFT).order_by("-pk").first()
    Campaign.objects.filter(name=CAMPAIGN_NAME, status__in=Campaign.DELETABLE).exclude(
        pk=campaign.pk if campaign else None
    ).delete()
    if campaign is None:
        campaign = Campaign.objects.create(
            name=CAMPAIGN_NAME,
            subject="Hello {{ subscriber.name }}, a demo from Relaydeck",
            from_email="Relaydeck demo <demo@example.test>",
            html_body=HTML,
        )
        campaign.lists.add(mailing_list)
        campaign.servers.add(server)
    return campaign


def can_run_again() -> bool:
    """The demo campaign has run (finished or cancelled), and no demo campaign is under way."""
    statuses = set(Campaign.objects.filter(name=CAMPAIGN_NAME).values_list("status", flat=True))
    return bool(statuses & {Campaign.Status.FINISHED, Campaign.Status.CANCELLED}) and not (
        statuses & set(Campaign.UNDER_WAY)
    )


def _unlearn(server: SmtpServer) -> None:
    """The demo server's limits as the demo made them: what was learned is forgotten, on the
    entry and in the cluster's shared limits, and a learned cap that was applied is dropped.
    Saving it changes `updated_at`, so every process rebuilds its pool, and its learner."""
    for name, value in (UNLEARNED | {name: DEMO_SERVER[name] for name in ("max_conns", "max_msgs_per_conn")}).items():
        setattr(server, name, value)
    server.save()
    server_id = server.pk
    transaction.on_commit(lambda: forget_learned(server_id))


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
