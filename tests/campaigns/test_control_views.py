"""Launch, pause, resume, cancel, retry: one change per click, whatever the clicking, and a
page that says what the click did and what happens next."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker

from campaigns.models import Campaign, Delivery
from campaigns.sending import loop
from tests.campaigns.test_sending import make_campaign

ACTIONS = ["launch", "pause", "resume", "cancel", "retry_failed"]


@pytest.fixture
def campaign(make_server):
    return make_campaign([make_server()], 3)


def queued_tasks() -> int:
    return get_broker().queue_size()


def test_home_is_the_campaign_list(sender_client):
    response = sender_client.get("/")
    assert response.status_code == 302 and response.url == reverse("campaigns:list")


@pytest.mark.django_db
@pytest.mark.parametrize("action", [*ACTIONS, "progress"])
def test_every_action_requires_login(client, campaign, action):
    response = client.get(reverse(f"campaigns:{action}", args=[campaign.pk]))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


@pytest.mark.parametrize("action", [action for action in ACTIONS if action != "cancel"])
def test_actions_refuse_get(sender_client, campaign, action):
    assert sender_client.get(reverse(f"campaigns:{action}", args=[campaign.pk])).status_code == 405


def test_cancel_asks_first_without_javascript_and_changes_nothing_on_get(sender_client, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)

    response = sender_client.get(reverse("campaigns:cancel", args=[campaign.pk]))

    content = response.content.decode()
    assert response.status_code == 200 and "Cancel “News” for good?" in content
    assert f'<form method="post" action="{reverse("campaigns:cancel", args=[campaign.pk])}">' in content
    assert 'name="csrfmiddlewaretoken"' in content
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING


def test_asking_to_cancel_what_cannot_be_cancelled_says_so(sender_client, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.FINISHED)

    response = sender_client.get(reverse("campaigns:cancel", args=[campaign.pk]), follow=True)

    assert "is finished: nothing to cancel" in response.content.decode()


def test_unknown_campaign_is_404(sender_client):
    assert sender_client.post(reverse("campaigns:launch", args=[999])).status_code == 404


def test_launch_twice_enqueues_one_task(sender_client, campaign, django_capture_on_commit_callbacks):
    before = queued_tasks()
    url = reverse("campaigns:launch", args=[campaign.pk])

    with django_capture_on_commit_callbacks(execute=True):
        first = sender_client.post(url)
        second = sender_client.post(url, follow=True)

    assert first.status_code == 302 and first.url == reverse("campaigns:detail", args=[campaign.pk])
    assert queued_tasks() == before + 1
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING and campaign.started_at
    assert "nothing to launch" in second.content.decode()


def test_launch_with_htmx_returns_the_progress_block(sender_client, campaign):
    response = sender_client.post(reverse("campaigns:launch", args=[campaign.pk]), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="campaign-progress"' in html and "Running" in html and "every 2s" in html
    assert "<html" not in html


def test_launch_needs_an_enabled_server(sender_client, campaign):
    campaign.servers.update(enabled=False)
    response = sender_client.post(reverse("campaigns:launch", args=[campaign.pk]), follow=True)
    assert "Choose at least one enabled SMTP server" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_launch_with_a_time_ahead_schedules(sender_client, campaign):
    from datetime import timedelta

    from django.utils import timezone

    campaign.scheduled_at = timezone.now() + timedelta(hours=1)
    campaign.save()
    sender_client.post(reverse("campaigns:launch", args=[campaign.pk]))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED


def test_pause_resume_cancel(sender_client, campaign):
    campaign.launch()
    post = lambda action: sender_client.post(reverse(f"campaigns:{action}", args=[campaign.pk]))  # noqa: E731

    post("pause")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == ("paused", "Paused by hand.")
    post("resume")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == ("running", "")
    post("cancel")
    campaign.refresh_from_db()
    assert campaign.status == "cancelled" and campaign.finished_at
    post("resume")
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"


def test_progress_shows_counts_and_escapes_what_servers_said(sender_client, campaign):
    loop.populate(campaign)
    from django.utils import timezone

    Campaign.objects.filter(pk=campaign.pk).update(status="paused")
    Delivery.objects.filter(pk=campaign.deliveries.first().pk).update(
        status="failed", last_code=550, last_reply="<script>alert(1)</script> no such user", updated_at=timezone.now()
    )
    response = sender_client.get(reverse("campaigns:progress", args=[campaign.pk]))
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; no such user" in html and "<script>alert" not in html
    assert "1 of 3 done" in html
    assert "Retry failed" in html


@pytest.mark.parametrize("status", ["finished", "paused"])
def test_progress_rate_is_the_average_over_the_time_it_ran_its_pauses_left_out(sender_client, campaign, status):
    loop.populate(campaign)
    now = timezone.now()
    campaign.deliveries.update(status="sent", sent_at=now)
    # Started ten minutes ago, but ran for two seconds only: the rest was a pause.
    Campaign.objects.filter(pk=campaign.pk).update(
        status=status,
        started_at=now - timedelta(minutes=10),
        finished_at=now if status == "finished" else None,
        active_time=timedelta(seconds=2),
    )

    html = sender_client.get(reverse("campaigns:progress", args=[campaign.pk])).content.decode()

    assert "1.5 msg/s on average, pauses left out" in html


HTMX = {"HTTP_HX_REQUEST": "true"}
POLLS = 'hx-trigger="every 2s"'
POLLS_SLOWLY = 'hx-trigger="every 10s"'


def _running_with(campaign: Campaign, *statuses: str) -> Campaign:
    loop.populate(campaign)
    for delivery, status in zip(campaign.deliveries.order_by("pk"), statuses, strict=True):
        Delivery.objects.filter(pk=delivery.pk).update(status=status)
    Campaign.objects.filter(pk=campaign.pk).update(status="running")
    campaign.refresh_from_db()
    return campaign


def _badge(html: str) -> str:
    return re.search(r'<span class="badge status-\w+">([^<]*)</span>', html).group(1)


@pytest.mark.parametrize(
    "action, stopping, stopped", [("pause", "Pausing…", "Paused"), ("cancel", "Cancelling…", "Cancelled")]
)
def test_a_pause_or_cancel_says_so_and_refreshes_until_nothing_is_in_flight(
    sender_client, campaign, action, stopping, stopped
):
    _running_with(campaign, "sent", "sending", "sending")

    html = sender_client.post(reverse(f"campaigns:{action}", args=[campaign.pk]), **HTMX).content.decode()

    assert _badge(html) == stopping
    assert f'hx-get="{reverse("campaigns:progress", args=[campaign.pk])}?shown={stopped.lower()}" {POLLS}' in html
    assert "2 claimed, finishing" in html
    # The sender settles what it had in hand: one went out, one goes back unsent.
    first, second = campaign.deliveries.filter(status="sending").order_by("pk")
    Delivery.objects.filter(pk=first.pk).update(status="sent")
    html = sender_client.get(reverse("campaigns:progress", args=[campaign.pk])).content.decode()
    assert _badge(html) == stopping and POLLS in html
    Delivery.objects.filter(pk=second.pk).update(status="pending")
    html = sender_client.get(reverse("campaigns:progress", args=[campaign.pk])).content.decode()
    assert _badge(html) == stopped
    assert POLLS not in html and "claimed, finishing" not in html
    # A paused campaign may be resumed elsewhere: the page follows it slowly. A cancelled one is
    # over, but bounce and complaint reports still change its counters: once a minute.
    assert (POLLS_SLOWLY if action == "pause" else 'hx-trigger="every 60s"') in html.split(">", 1)[0]


def test_a_pause_with_nothing_in_flight_is_paused_at_once(sender_client, campaign):
    _running_with(campaign, "sent", "pending", "pending")

    html = sender_client.post(reverse("campaigns:pause", args=[campaign.pk]), **HTMX).content.decode()

    assert _badge(html) == "Paused" and POLLS not in html


def test_the_campaign_list_says_pausing_too(sender_client, campaign):
    _running_with(campaign, "sent", "sending", "pending")
    campaign.pause()

    html = sender_client.get(reverse("campaigns:list")).content.decode()

    assert 'class="badge status-paused">Pausing…</span>' in html


def _with_failures(campaign: Campaign, status: str, failures: int) -> Campaign:
    _running_with(campaign, *["failed"] * failures, *["sent"] * (3 - failures))
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    return campaign


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_retry_failed_on_a_paused_campaign_says_they_wait_for_resume(sender_client, campaign, headers):
    _with_failures(campaign, "paused", 2)

    response = sender_client.post(reverse("campaigns:retry_failed", args=[campaign.pk]), follow=True, **headers)

    html = response.content.decode()
    assert "2 failed deliveries queued again; they go out when you resume the campaign." in html
    assert reverse("campaigns:resume", args=[campaign.pk]) in html  # the Resume button is right there
    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert campaign.deliveries.filter(status="pending").count() == 2


def test_retry_failed_on_a_finished_campaign_sends_them_again(sender_client, campaign):
    _with_failures(campaign, "finished", 1)

    response = sender_client.post(reverse("campaigns:retry_failed", args=[campaign.pk]), **HTMX)

    html = response.content.decode()
    assert "1 failed delivery queued again; sending it now." in html
    assert _badge(html) == "Running" and POLLS in html
    campaign.refresh_from_db()
    assert campaign.status == "running"


def test_retry_failed_on_a_cancelled_campaign_changes_nothing(sender_client, campaign):
    _with_failures(campaign, "running", 1)
    campaign.cancel()

    response = sender_client.post(reverse("campaigns:retry_failed", args=[campaign.pk]), **HTMX)

    html = response.content.decode()
    assert "is cancelled: nothing to retry." in html and "Retry failed" not in html
    assert campaign.deliveries.filter(status="failed").count() == 1
