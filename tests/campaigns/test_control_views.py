"""Launch, pause, resume, cancel, retry: one change per click, whatever the clicking."""

import pytest
from django.urls import reverse
from django_q.brokers import get_broker

from campaigns.models import Campaign, Delivery
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


@pytest.mark.parametrize("action", ACTIONS)
def test_actions_refuse_get(sender_client, campaign, action):
    assert sender_client.get(reverse(f"campaigns:{action}", args=[campaign.pk])).status_code == 405


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
    from campaigns.sending import loop

    loop.populate(campaign)
    from django.utils import timezone

    Delivery.objects.filter(pk=campaign.deliveries.first().pk).update(
        status="failed", last_code=550, last_reply="<script>alert(1)</script> no such user", updated_at=timezone.now()
    )
    response = sender_client.get(reverse("campaigns:progress", args=[campaign.pk]))
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; no such user" in html and "<script>alert" not in html
    assert "1 of 3 done" in html
    assert "Retry failed" in html


def test_progress_rate_is_the_runs_average_once_finished(sender_client, campaign):
    from datetime import timedelta

    from django.utils import timezone

    from campaigns.sending import loop

    loop.populate(campaign)
    now = timezone.now()
    campaign.deliveries.update(status="sent", sent_at=now)
    Campaign.objects.filter(pk=campaign.pk).update(
        status="finished", started_at=now - timedelta(seconds=2), finished_at=now
    )

    html = sender_client.get(reverse("campaigns:progress", args=[campaign.pk])).content.decode()

    assert "1.5 msg/s on average" in html
