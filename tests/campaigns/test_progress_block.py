"""The progress block of a campaign: the wait for a quota window, an ETA that includes it,
the servers it shares with other running campaigns, and what a cancel kept from going out."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, Delivery
from campaigns.progress import Progress, progress
from campaigns.sending import loop
from tests.campaigns.test_sending import make_campaign

pytestmark = pytest.mark.django_db

SES_DAY = "waiting for Amazon SES's daily quota: 50,000 of 50,000 recipients used"


def _running(campaign: Campaign, **fields) -> Campaign:
    Campaign.objects.filter(pk=campaign.pk).update(status="running", **fields)
    campaign.refresh_from_db()
    return campaign


def _named(campaign: Campaign, name: str) -> Campaign:
    Campaign.objects.filter(pk=campaign.pk).update(name=name)
    campaign.name = name
    return campaign


def _block(browser, campaign: Campaign) -> str:
    response = browser.get(reverse("campaigns:progress", args=[campaign.pk]))
    assert response.status_code == 200
    return response.content.decode()


# -- waiting for a quota window --


def test_a_waiting_campaign_says_what_it_waits_for_and_counts_the_wait_in_its_eta(viewer_client, make_server):
    now = timezone.now()
    campaign = make_campaign([make_server()], 40)
    loop.populate(campaign)
    # 30 sent in the minute before the window filled, 5 minutes ago: 0.5 a second, 10 to go.
    for n, delivery in enumerate(campaign.deliveries.order_by("pk")[:30]):
        delivery.status, delivery.sent_at = "sent", now - timedelta(minutes=5, seconds=2 * n)
        delivery.save(update_fields=["status", "sent_at"])
    waiting_until = now + timedelta(hours=2)
    _running(campaign, started_at=now - timedelta(minutes=10), waiting_reason=SES_DAY, waiting_until=waiting_until)

    html = _block(viewer_client, campaign)

    assert "Waiting for Amazon SES&#x27;s daily quota: 50,000 of 50,000 recipients used; resumes " in html
    assert f"{timezone.localtime(waiting_until):%H:%M} UTC</p>" in html
    assert "0.5 msg/s before the wait" in html
    assert "about 2 h 00 min to go, the wait included" in html
    assert f'hx-get="{reverse("campaigns:progress", args=[campaign.pk])}?shown=running" hx-trigger="every 2s"' in html


def test_once_sending_resumes_the_wait_is_gone(viewer_client, make_server):
    campaign = _running(make_campaign([make_server()], 3), started_at=timezone.now())

    html = _block(viewer_client, campaign)

    assert "Waiting for" not in html and "resumes" not in html and "the wait included" not in html


@pytest.mark.parametrize(
    "now, shown",
    [
        (datetime(2026, 11, 25, 13, 40, tzinfo=UTC), "recipients used; resumes 14:05 UTC</p>"),
        (datetime(2026, 11, 24, 23, 10, tzinfo=UTC), "recipients used; resumes Wed 25 Nov 14:05 UTC</p>"),
    ],
)
def test_the_time_it_resumes_names_the_day_when_not_today(make_server, now, shown):
    campaign = _running(
        make_campaign([make_server()], 1),
        waiting_reason=SES_DAY,
        waiting_until=datetime(2026, 11, 25, 14, 5, tzinfo=UTC),
    )
    block = progress(campaign)
    block.now = now

    assert shown in render_to_string("campaigns/_progress.html", {"campaign": campaign, "progress": block})


def test_the_eta_starts_when_the_wait_ends():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    running = Campaign(status="running")
    counts = dict.fromkeys(Delivery.Status.values, 0) | {"pending": 600}

    def eta(waiting_until):
        return Progress(running, counts, rate_per_s=10, waiting_until=waiting_until, now=now).eta_text

    assert eta(None) == "1 min 00 s"
    assert eta(now + timedelta(minutes=30)) == "31 min 00 s"
    assert eta(now + timedelta(days=1, hours=2)) == "1 d 2 h"
    assert eta(now - timedelta(minutes=1)) == "1 min 00 s"  # resumed, not yet cleared by the sender


# -- shared servers --


def test_a_running_campaign_names_the_other_running_campaigns_on_its_servers(viewer_client, make_server):
    ses, relay, spare = make_server(name="SES"), make_server(name="Relay"), make_server(name="Spare")
    ours = _running(_named(make_campaign([ses, relay], 2), "Ours"))
    bold = _running(_named(make_campaign([ses], 2), "<b>Bold</b> & co"))
    both = _running(_named(make_campaign([ses, relay], 2), "Both"))
    _named(make_campaign([ses], 2, status="paused"), "Paused one")
    _running(_named(make_campaign([spare], 2), "Elsewhere"))

    html = " ".join(_block(viewer_client, ours).split())

    link = '<a href="{}">{}</a>'.format
    bold_link = link(reverse("campaigns:detail", args=[bold.pk]), "&lt;b&gt;Bold&lt;/b&gt; &amp; co")
    both_link = link(reverse("campaigns:detail", args=[both.pk]), "Both")
    assert f"SES is shared with 2 other running campaigns: {bold_link}, {both_link}</p>" in html
    assert f"Relay is shared with 1 other running campaign: {both_link}</p>" in html
    assert "Spare" not in html and "Paused one" not in html and "Elsewhere" not in html
    page = viewer_client.get(reverse("campaigns:detail", args=[ours.pk])).content.decode()
    assert "SES is shared with 2 other running campaigns" in page


def test_a_campaign_alone_on_its_server_or_not_running_says_nothing_of_sharing(viewer_client, make_server):
    ses = make_server(name="SES")
    alone = _running(make_campaign([ses], 2))
    draft = make_campaign([make_server(name="Other")], 2)
    _running(make_campaign([draft.servers.get()], 2))

    assert "is shared with" not in _block(viewer_client, alone)
    assert "is shared with" not in _block(viewer_client, draft)


# -- a cancelled campaign --


def _sent_some_then_cancelled(campaign: Campaign, sent: int, failed: int, skipped: int, in_flight: int = 0) -> Campaign:
    loop.populate(campaign)
    ids = list(campaign.deliveries.order_by("pk").values_list("pk", flat=True))
    for status, count in [("sent", sent), ("failed", failed), ("skipped", skipped), ("sending", in_flight)]:
        Delivery.objects.filter(pk__in=ids[:count]).update(status=status)
        ids = ids[count:]
    _running(campaign, started_at=timezone.now())
    assert campaign.cancel()
    return campaign


def test_a_cancelled_campaign_shows_what_went_out_and_what_the_cancel_kept_back(viewer_client, make_server):
    campaign = _sent_some_then_cancelled(make_campaign([make_server()], 50), sent=4, failed=1, skipped=1)

    html = _block(viewer_client, campaign)

    assert "Cancelled after 6 of 50 (12.0%); 44 not sent" in html
    assert '<progress max="100" value="12.0">' in html
    assert '<dt>Cancelled</dt><dd class="count-cancelled">44</dd>' in html
    assert '<dt>Skipped</dt><dd class="count-skipped">1</dd>' in html  # the subscriber who left
    assert 'hx-trigger="every 60s"' in html  # bounce and complaint reports still come in
    listed = viewer_client.get(reverse("campaigns:list")).content.decode()
    assert 'value="12.0" title="Cancelled after 6 of 50; 44 not sent"' in listed


def test_what_a_busy_sender_gives_back_after_a_cancel_counts_as_not_sent(viewer_client, make_server):
    campaign = _sent_some_then_cancelled(make_campaign([make_server()], 10), sent=2, failed=0, skipped=0, in_flight=3)
    block = progress(campaign)
    assert (block.done, block.in_flight, block.not_sent, block.status_label) == (2, 3, 5, "Cancelling…")

    in_flight = campaign.deliveries.filter(status="sending").order_by("pk")
    in_flight.filter(pk=in_flight[0].pk).update(status="sent")
    in_flight.filter(pk=in_flight[0].pk).update(status="deferred")  # the server said 451
    in_flight.update(status="pending")  # the batch stopped before its turn

    assert "Cancelled after 3 of 10 (30.0%); 7 not sent" in _block(viewer_client, campaign)
