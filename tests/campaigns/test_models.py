"""What each campaign status allows, and what cancel and retry do to its deliveries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import F
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Subscriber
from campaigns.sending import loop
from smtp_settings.models import Suppression
from tests.campaigns.test_sending import make_campaign

pytestmark = pytest.mark.django_db

Status = Campaign.Status
PREDICATES = [
    "is_editable",
    "is_deletable",
    "can_launch",
    "can_pause",
    "can_resume",
    "can_cancel",
    "can_retry_failed",
]
# What a user may do in each status: one row per status, in the order above.
ALLOWED = {
    Status.DRAFT: {"is_editable", "is_deletable", "can_launch", "can_cancel"},
    Status.SCHEDULED: {"is_editable", "can_cancel"},
    Status.RUNNING: {"can_pause", "can_cancel", "can_retry_failed"},
    Status.PAUSED: {"can_resume", "can_cancel", "can_retry_failed"},
    Status.CANCELLED: {"is_deletable"},
    Status.FINISHED: {"is_deletable", "can_retry_failed"},
}


@pytest.mark.parametrize("status", Status.values)
def test_each_status_allows_exactly_its_actions(status):
    campaign = Campaign(status=status)

    assert {name for name in PREDICATES if getattr(campaign, name)} == ALLOWED[status]


@pytest.mark.parametrize("status", Status.values)
def test_the_predicates_agree_with_the_state_changes(make_server, status):
    """A button shown (its predicate true) is a click that wins; a hidden one would lose."""
    for action, predicate in [("pause", "can_pause"), ("resume", "can_resume"), ("cancel", "can_cancel")]:
        campaign = make_campaign([make_server()], 0, status=status)
        allowed = getattr(campaign, predicate)
        assert getattr(campaign, action)() == allowed, action


def _deliveries(campaign: Campaign, *statuses: str) -> None:
    loop.populate(campaign)
    for delivery, status in zip(campaign.deliveries.order_by("pk"), statuses, strict=True):
        delivery.status = status
        delivery.save(update_fields=["status"])


def _statuses(campaign: Campaign) -> list[str]:
    return list(campaign.deliveries.order_by("pk").values_list("status", flat=True))


def test_cancel_marks_what_waited_its_turn_as_cancelled_and_keeps_the_rest(make_server):
    campaign = make_campaign([make_server()], 6, status=Status.RUNNING)
    _deliveries(campaign, "sent", "failed", "skipped", "sending", "pending", "deferred")

    assert campaign.cancel()

    # The one in flight finishes as its sender takes it; the subscriber who left stays a skip.
    assert _statuses(campaign) == ["sent", "failed", "skipped", "sending", "cancelled", "cancelled"]


def test_retry_failed_requeues_the_failures_of_a_paused_campaign_without_resuming_it(make_server):
    campaign = make_campaign([make_server()], 3, status=Status.PAUSED)
    _deliveries(campaign, "sent", "failed", "failed")

    assert campaign.retry_failed() == 2

    assert campaign.status == Status.PAUSED
    assert _statuses(campaign) == ["sent", "pending", "pending"]


def test_retry_failed_restarts_a_finished_campaign(make_server, django_capture_on_commit_callbacks):
    campaign = make_campaign([make_server()], 2, status=Status.FINISHED)
    _deliveries(campaign, "sent", "failed")

    with django_capture_on_commit_callbacks() as enqueued:
        assert campaign.retry_failed() == 1

    assert campaign.status == Status.RUNNING and campaign.finished_at is None
    assert len(enqueued) == 1


def test_retry_failed_leaves_a_cancelled_campaign_alone(make_server):
    campaign = make_campaign([make_server()], 2, status=Status.RUNNING)
    _deliveries(campaign, "failed", "pending")
    campaign.cancel()

    assert campaign.retry_failed() == 0

    assert _statuses(campaign) == ["failed", "cancelled"]


@pytest.mark.django_db(transaction=True)
def test_deliveries_an_earlier_cancel_skipped_become_cancelled_on_upgrade(make_server):
    """Before `cancelled` existed, a cancel marked the rows it stopped `skipped`, "campaign cancelled"."""
    campaign = make_campaign([make_server()], 3, status=Status.RUNNING)
    _deliveries(campaign, "sent", "skipped", "skipped")
    Delivery.objects.filter(pk=campaign.deliveries.order_by("pk")[2].pk).update(last_reply="campaign cancelled")
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("campaigns")
    executor.migrate([("campaigns", "0005_senders")])

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    assert _statuses(campaign) == ["sent", "skipped", "cancelled"]


@pytest.mark.django_db(transaction=True)
def test_subscribers_who_left_before_the_suppression_list_existed_are_put_on_it_on_upgrade():
    left = {"Left@Example.test": "unsubscribed", "blocked@example.test": "blocklisted", "here@example.test": "active"}
    for email, status in left.items():
        Subscriber.objects.create(email=email, status=status)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("campaigns")
    executor.migrate([("campaigns", "0009_bounces_and_guard_rails")])
    Suppression.objects.all().delete()  # as it was then: nobody on the list

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    assert dict(Suppression.objects.values_list("email", "reason")) == {
        "left@example.test": "unsubscribe",
        "blocked@example.test": "manual",
    }


# -- active time: what the average rate is counted over --


def _ran_for(campaign: Campaign, seconds: int) -> None:
    """As if the campaign had started running `seconds` earlier than it did."""
    Campaign.objects.filter(pk=campaign.pk).update(running_since=F("running_since") - timedelta(seconds=seconds))
    campaign.refresh_from_db()


def _near(seconds: float, expected: float) -> bool:
    return expected <= seconds < expected + 5


def test_the_active_time_counts_running_only_across_pauses_and_resumes(make_server, django_capture_on_commit_callbacks):
    campaign = make_campaign([make_server()], 0)
    assert campaign.launch() and campaign.running_since is not None
    _ran_for(campaign, 100)

    assert campaign.pause()
    assert campaign.running_since is None and _near(campaign.active_time.total_seconds(), 100)
    assert _near(campaign.active_seconds(), 100)  # the pause does not count

    assert campaign.resume()
    _ran_for(campaign, 20)
    assert _near(campaign.active_seconds(), 120)

    assert campaign.finish()
    assert campaign.status == Status.FINISHED and campaign.running_since is None
    assert _near(campaign.active_time.total_seconds(), 120)


def test_a_cancel_stops_the_clock_of_a_running_campaign_and_adds_nothing_to_a_paused_one(make_server):
    running = make_campaign([make_server()], 0, status=Status.DRAFT)
    running.launch()
    _ran_for(running, 30)
    paused = make_campaign([make_server()], 0, status=Status.PAUSED)

    assert running.cancel() and paused.cancel()

    assert _near(running.active_time.total_seconds(), 30) and running.running_since is None
    assert paused.active_time == timedelta(0)


def test_a_restarted_finished_campaign_counts_its_new_run_on_top(make_server, django_capture_on_commit_callbacks):
    campaign = make_campaign([make_server()], 1, status=Status.FINISHED, active_time=timedelta(seconds=50))
    _deliveries(campaign, "failed")

    assert campaign.retry_failed() == 1
    _ran_for(campaign, 10)

    assert campaign.is_running and _near(campaign.active_seconds(), 60)


@pytest.mark.django_db(transaction=True)
def test_a_rate_limit_of_zero_becomes_blank_on_upgrade(make_server):
    """0 meant "no limit" before blank did; finished campaigns get their whole run as active time."""
    campaign = make_campaign([make_server()], 0, status=Status.FINISHED)
    start = timezone.now() - timedelta(minutes=3)
    Campaign.objects.filter(pk=campaign.pk).update(
        rate_limit=None, started_at=start, finished_at=start + timedelta(minutes=2)
    )
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("campaigns")
    executor.migrate([("campaigns", "0010_suppress_earlier_unsubscribes")])
    Campaign.objects.filter(pk=campaign.pk).update(rate_limit=0)

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    campaign.refresh_from_db()
    assert campaign.rate_limit is None and campaign.active_time == timedelta(minutes=2)
