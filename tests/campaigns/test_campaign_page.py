"""The campaign page follows the campaign: its links, its events and its progress change with
the status without a reload; its figures say what they count, with thousands separators."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Subscriber
from campaigns.sending import loop
from campaigns.views.control import STATUS_CHANGED
from smtp_settings.models import Suppression
from tests.campaigns.test_sending import make_campaign

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def campaign(make_server):
    return make_campaign([make_server()], 3)


def _status(campaign: Campaign, status: str, **fields) -> Campaign:
    Campaign.objects.filter(pk=campaign.pk).update(status=status, **fields)
    campaign.refresh_from_db()
    return campaign


def _opening_tag(html: str, element_id: str) -> str:
    return re.search(rf'<[a-z]+ [^>]*id="{element_id}"[^>]*>', html).group(0)


def _progress(browser, campaign: Campaign, shown: str | None = None):
    query = {"shown": shown} if shown else {}
    return browser.get(reverse("campaigns:progress", args=[campaign.pk]), query, **HTMX)


# -- the page follows the status --


def test_the_progress_block_tells_the_page_when_the_status_is_not_the_one_it_shows(viewer_client, campaign):
    _status(campaign, "running")

    assert _progress(viewer_client, campaign, shown="running").get("HX-Trigger") is None
    _status(campaign, "finished")
    changed = _progress(viewer_client, campaign, shown="running")

    assert changed["HX-Trigger"] == STATUS_CHANGED
    assert 'hx-trigger="every 60s"' in _opening_tag(changed.content.decode(), "campaign-progress")


def test_a_click_tells_the_page_whatever_it_did(sender_client, campaign):
    response = sender_client.post(reverse("campaigns:launch", args=[campaign.pk]), **HTMX)

    assert response["HX-Trigger"] == STATUS_CHANGED
    assert 'hx-trigger="every 2s"' in _opening_tag(response.content.decode(), "campaign-progress")


@pytest.mark.parametrize("status", ["draft", "scheduled", "paused"])
def test_a_campaign_that_may_start_elsewhere_is_followed_every_10_s(viewer_client, campaign, status):
    _status(campaign, status, scheduled_at=timezone.now() + timedelta(days=1) if status == "scheduled" else None)

    html = _progress(viewer_client, campaign).content.decode()

    assert 'hx-trigger="every 10s"' in _opening_tag(html, "campaign-progress")


@pytest.mark.parametrize("status", ["finished", "cancelled"])
def test_a_campaign_that_is_over_is_still_followed_every_minute(viewer_client, sender_client, campaign, status):
    """A retry from another tab or the command line restarts a finished campaign, and bounce
    and complaint reports go on changing the counters of either."""
    _status(campaign, status)

    html = _progress(viewer_client, campaign, shown=status).content.decode()

    assert 'hx-trigger="every 60s"' in _opening_tag(html, "campaign-progress")
    Campaign.objects.filter(pk=campaign.pk).update(complaints=3)
    later = _progress(viewer_client, campaign, shown=status).content.decode()
    assert re.search(r'class="count-complaints"[^>]*>3<', later)


@pytest.mark.parametrize("status", ["draft", "scheduled"])
def test_before_the_launch_a_poll_redraws_nothing_until_the_status_changes(
    viewer_client, campaign, status, django_assert_max_num_queries
):
    """Its reach is counted when the page shows it, or its status changes: not every poll."""
    _status(campaign, status, scheduled_at=timezone.now() + timedelta(days=1) if status == "scheduled" else None)
    viewer_client.get(reverse("campaigns:detail", args=[campaign.pk]))  # a poll follows the page

    with django_assert_max_num_queries(4):  # the session, its user, its role, the campaign
        unchanged = _progress(viewer_client, campaign, shown=status)
    _status(campaign, "running")
    started = _progress(viewer_client, campaign, shown=status)

    assert unchanged.status_code == 204 and not unchanged.content  # htmx keeps the block as it is, polling
    assert started.status_code == 200 and started["HX-Trigger"] == STATUS_CHANGED


POLLED = ["campaigns:progress", "campaigns:links", "logs:campaign"]


@pytest.mark.parametrize("name", POLLED)
def test_a_poll_of_a_campaign_deleted_elsewhere_sends_the_page_to_the_list(sender_client, campaign, name):
    """htmx swaps no 404: the block would poll for ever."""
    url = reverse(name, args=[campaign.pk])
    Campaign.objects.filter(pk=campaign.pk).delete()

    polled = sender_client.get(url, {"shown": "draft"}, **HTMX)
    plain = sender_client.get(url)

    assert polled.status_code == 200 and polled["HX-Redirect"] == reverse("campaigns:list")
    assert plain.status_code == 404
    listed = sender_client.get(reverse("campaigns:list")).content.decode()
    assert "That campaign no longer exists: it was deleted." in listed


@pytest.mark.parametrize("name", POLLED)
def test_polls_do_not_load_the_message_bodies(viewer_client, campaign, name):
    """They are up to 1 MiB each, and no block shows them."""
    _status(campaign, "running")

    with CaptureQueriesContext(connection) as queries:
        response = viewer_client.get(reverse(name, args=[campaign.pk]), {"shown": "running"}, **HTMX)

    assert response.status_code == 200
    read = [query["sql"] for query in queries if '"campaigns_campaign"."html_body"' in query["sql"]]
    read += [query["sql"] for query in queries if '"campaigns_campaign"."text_body"' in query["sql"]]
    assert read == []


def test_the_links_and_events_fetch_themselves_again_when_the_status_changes(sender_client, campaign):
    html = sender_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()

    links, events = _opening_tag(html, "campaign-links"), _opening_tag(html, "campaign-events")
    assert f'hx-get="{reverse("campaigns:links", args=[campaign.pk])}"' in links
    assert f'hx-trigger="{STATUS_CHANGED} from:body"' in links
    # A draft has no events to poll for; once it runs, they are polled too.
    assert f'hx-trigger="{STATUS_CHANGED} from:body"' in events
    _status(campaign, "running")
    events = _opening_tag(
        sender_client.get(reverse("logs:campaign", args=[campaign.pk])).content.decode(), "campaign-events"
    )
    assert f'hx-trigger="every 10s, {STATUS_CHANGED} from:body"' in events


def test_edit_and_delete_follow_the_status(sender_client, campaign):
    url = reverse("campaigns:links", args=[campaign.pk])
    edit, delete = reverse("campaigns:edit", args=[campaign.pk]), reverse("campaigns:delete", args=[campaign.pk])

    draft = sender_client.get(url, **HTMX).content.decode()
    _status(campaign, "running")
    running = sender_client.get(url, **HTMX).content.decode()
    _status(campaign, "finished")
    finished = sender_client.get(url, **HTMX).content.decode()

    assert f'<a href="{edit}">Edit</a>' in draft and delete in draft  # a plain link among links
    assert edit not in running and delete not in running
    assert edit not in finished and delete in finished


def test_the_links_need_a_login_and_show_a_viewer_nothing_to_change(client, viewer_client, campaign):
    url = reverse("campaigns:links", args=[campaign.pk])

    response = client.get(url)
    html = viewer_client.get(url).content.decode()

    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert "Preview" in html and "Edit" not in html and "Delete" not in html
    assert viewer_client.post(url).status_code == 405


def test_a_draft_offers_launch_and_delete_but_no_ambiguous_cancel(sender_client, campaign):
    html = sender_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()

    assert ">Launch</button>" in html and ">Delete</a>" in html
    assert "Cancel" not in html


def test_a_running_campaign_offers_to_cancel_it_and_asks_first(sender_client, campaign):
    _status(campaign, "running")

    html = _progress(sender_client, campaign).content.decode()

    cancel = reverse("campaigns:cancel", args=[campaign.pk])
    assert f'<form method="get" action="{cancel}"' in html and f'hx-post="{cancel}"' in html
    assert 'hx-confirm="Cancel this campaign for good?' in html and ">Cancel campaign</button>" in html


# -- a draft's numbers --


def test_a_draft_says_how_many_it_will_reach(viewer_client, sender_client, campaign):
    Subscriber.objects.filter(email="reader0@example.test").update(status="unsubscribed")
    Suppression.objects.create(email="reader1@example.test", reason=Suppression.Reason.HARD_BOUNCE)
    extra = [Subscriber.objects.create(email=f"more{n}@example.test") for n in range(1_000)]
    campaign.lists.first().subscribers.add(*extra)

    html = _progress(viewer_client, campaign).content.decode()
    listed = sender_client.get(reverse("campaigns:list")).content.decode()

    assert "Will go to <strong>1,001</strong> subscribers" in html
    assert "0 of 0" not in html and "<progress" not in html
    assert "1,001 to reach" in listed and "0 / 0" not in listed


def test_a_subscriber_on_two_of_its_lists_is_counted_once(viewer_client, campaign):
    from campaigns.models import MailingList

    second = MailingList.objects.create(name="Second")
    second.subscribers.add(*Subscriber.objects.all())
    campaign.lists.add(second)

    assert "Will go to <strong>3</strong> subscribers" in _progress(viewer_client, campaign).content.decode()


# -- counters --


def test_figures_have_thousands_separators(viewer_client, make_server):
    campaign = make_campaign([make_server()], 1_200)
    loop.populate(campaign)
    _status(campaign, "finished", sessions_closed_421=4_321, started_at=timezone.now(), finished_at=timezone.now())
    campaign.deliveries.update(status="sent")

    html = _progress(viewer_client, campaign).content.decode()

    assert "1,200 of 1,200 done" in html
    assert '<dd class="count-sent">1,200</dd>' in html and "<dt>421s</dt><dd>4,321</dd>" in html


def test_claimed_deliveries_are_named_for_what_they_are_and_open_connections_are_shown(viewer_client, campaign):
    loop.populate(campaign)
    campaign.deliveries.update(status="sending")
    _status(campaign, "running", started_at=timezone.now())

    html = _progress(viewer_client, campaign).content.decode()

    assert re.search(r'<dt title="Taken by its senders[^"]*">Claimed</dt><dd class="count-sending">3</dd>', html)
    assert "· 0 connections open to its servers" in html


def test_the_last_errors_are_the_latest_newest_first(viewer_client, make_server):
    campaign = make_campaign([make_server()], 8)
    loop.populate(campaign)
    now = timezone.now()
    rows = list(campaign.deliveries.order_by("pk").select_related("subscriber"))
    for n, delivery in enumerate(rows):
        # The first four failed long ago; the last four together, in one batch.
        at = now - timedelta(hours=1) + timedelta(seconds=n) if n < 4 else now
        Delivery.objects.filter(pk=delivery.pk).update(status="failed", updated_at=at, last_reply=f"550 no {n}")
    _status(campaign, "finished", started_at=now, finished_at=now)

    html = _progress(viewer_client, campaign).content.decode()

    shown = re.findall(r"<td>(reader\d+@example.test)</td>", html)
    assert shown == [rows[n].subscriber.email for n in (7, 6, 5, 4, 3)]
    assert '<table class="list-table errors">' in html and "<caption>Last errors, newest first</caption>" in html
