"""Demo data: a sandbox server entry that behaves like SES, a list of fake subscribers on the
reserved example.test domain, and a draft campaign to launch."""

from django.db import transaction

from campaigns.models import Campaign, MailingList, Subscriber
from smtp_settings.models import SmtpServer

DEMO_SANDBOX_PORT = 2525
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


def _email(n: int) -> str:
    return f"reader{n:06d}@example.test"


@transaction.atomic
def create_demo(subscribers: int) -> Campaign:
    """Create (or top up) the demo data; safe to run again."""
    server, _ = SmtpServer.objects.get_or_create(
        name=SERVER_NAME,
        defaults={
            "host": "127.0.0.1",
            "port": DEMO_SANDBOX_PORT,
            "tls": SmtpServer.Tls.NONE,
            "auth_protocol": SmtpServer.Auth.NONE,
            "max_conns": SANDBOX_CONNS,
            "max_msgs_per_conn": 0,  # let the pool find the cap from the 421s
            "idle_timeout": 15,
        },
    )
    mailing_list, _ = MailingList.objects.get_or_create(
        name=LIST_NAME, defaults={"description": "Fake subscribers on the reserved example.test domain."}
    )
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
    campaign = Campaign.objects.filter(name=CAMPAIGN_NAME, status=Campaign.Status.DRAFT).first()
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
