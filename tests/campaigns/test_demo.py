"""`manage.py demo`: something to launch on a fresh install, made once however often it runs."""

from io import StringIO

from django.core.management import call_command

from campaigns.demo import DEMO_SANDBOX_PORT, SES_CAP
from campaigns.models import Campaign, Subscriber
from smtp_settings.models import SmtpServer


def test_demo_creates_a_sandbox_server_a_list_and_a_draft_campaign_once(db):
    out = StringIO()
    call_command("demo", "--subscribers", "30", stdout=out)
    call_command("demo", "--subscribers", "30", stdout=StringIO())

    server = SmtpServer.objects.get()
    assert (server.host, server.port, server.max_conns) == ("127.0.0.1", DEMO_SANDBOX_PORT, 20)
    campaign = Campaign.objects.get()
    assert campaign.status == "draft" and list(campaign.servers.all()) == [server]
    assert Subscriber.objects.filter(lists__campaigns=campaign, email__endswith="@example.test").count() == 30
    assert f"campaign {campaign.pk}" in out.getvalue() and str(SES_CAP) in out.getvalue()
