"""`manage.py demo`: something to launch on a fresh install, made once however often it runs,
and ready to show the sandbox's 421s again each time it runs."""

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from campaigns.demo import DEMO_SANDBOX_PORT, SERVER_NAME, SES_CAP
from campaigns.models import Campaign, Delivery, Subscriber
from project.roles import Role
from smtp_settings.limit_stores import store
from smtp_settings.models import SmtpServer, Suppression
from tests.campaigns.test_sending import start_sending

# The second run sends through a real sandbox, from the backend's threads: committed data.
pytestmark = pytest.mark.django_db(transaction=True)


def demo(subscribers: int = 30) -> str:
    out = StringIO()
    call_command("demo", "--subscribers", str(subscribers), stdout=out)
    return out.getvalue()


def test_demo_creates_a_sandbox_server_a_list_and_a_draft_campaign_once():
    out = demo()
    demo()

    server = SmtpServer.objects.get()
    assert (server.host, server.port, server.max_conns) == ("127.0.0.1", DEMO_SANDBOX_PORT, 20)
    campaign = Campaign.objects.get()
    assert campaign.status == "draft" and list(campaign.servers.all()) == [server]
    assert Subscriber.objects.filter(lists__campaigns=campaign, email__endswith="@example.test").count() == 30
    assert f"campaign {campaign.pk}" in out and str(SES_CAP) in out and "to 30 subscribers" in out


def test_demo_says_the_reach_the_campaign_page_says(sender_client):
    """The active subscribers, less the suppressed: what "Will go to" says, formatted the same."""
    demo(1_002)
    Subscriber.objects.filter(email="reader000001@example.test").update(status=Subscriber.Status.BLOCKLISTED)
    Suppression.objects.create(email="reader000002@example.test", reason=Suppression.Reason.MANUAL)

    out = demo(1_002)

    campaign = Campaign.objects.get()
    assert "to 1,000 subscribers" in out
    page = sender_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "Will go to <strong>1,000</strong> subscribers" in page


def test_a_second_run_after_the_demo_finished_shows_the_421s_again(smtp_sandbox):
    sandbox = smtp_sandbox(max_msgs_per_session=10, pipelining=True)
    demo(400)
    SmtpServer.objects.filter(name=SERVER_NAME).update(port=sandbox.port)
    first = Campaign.objects.get()
    start_sending(first)
    server = SmtpServer.objects.get()
    assert server.learned_msgs_per_conn == 9
    server.apply_learned_limits()  # the settings page's Apply: from now on it rotates before the 421
    store().set_ceiling(server.pk, 3)  # as if the cluster had learned a lower ceiling too
    replied_421 = sandbox.summary()["replied_421"]
    assert replied_421 > 0

    out = demo(400)

    second = Campaign.objects.get()
    assert second.pk != first.pk and second.status == "draft" and not second.deliveries.exists()
    assert list(second.servers.all()) == [server] and second.lists.get().subscribers.count() == 400
    server.refresh_from_db()
    assert (server.max_msgs_per_conn, server.max_conns, server.learned_msgs_per_conn) == (0, 20, None)
    assert store().state(server.pk).ceiling is None
    assert f"Demo ready: campaign {second.pk}" in out

    start_sending(second)

    assert sandbox.summary()["replied_421"] > replied_421
    assert Campaign.objects.get().status == "finished"


@pytest.mark.parametrize("status", ["running", "paused", "scheduled"])
def test_a_demo_under_way_is_left_as_it_is_and_the_run_says_so(status):
    demo()
    Campaign.objects.update(status=status)
    SmtpServer.objects.update(learned_msgs_per_conn=9)

    out = demo()

    campaign = Campaign.objects.get()
    assert campaign.status == status and SmtpServer.objects.get().learned_msgs_per_conn == 9
    assert f"The demo campaign {campaign.pk} is {campaign.get_status_display().lower()}: left as it is." in out


def test_duplicates_left_by_earlier_runs_become_one_draft():
    demo()
    finished = Campaign.objects.get()
    Campaign.objects.update(status="finished")
    Campaign.objects.create(name=finished.name, subject="s", from_email="a@example.test", is_demo=True)  # a 2nd draft

    demo()

    assert Campaign.objects.filter(name=finished.name).count() == 1
    assert Campaign.objects.get().status == "draft"


def test_admins_see_run_the_demo_again_once_it_has_run_and_get_a_fresh_draft(login_as):

    demo()
    first = Campaign.objects.get()
    admin, sender = login_as(Role.ADMIN), login_as(Role.SENDER)
    assert 'id="demo-again"' not in admin.get(reverse("campaigns:list")).content.decode()  # a draft: nothing to redo
    Campaign.objects.update(status="finished")
    learned = SmtpServer.objects.get()
    learned.record_learned("msgs_per_conn", 9)
    learned.apply_learned_limits()
    assert 'id="demo-again"' not in sender.get(reverse("campaigns:list")).content.decode()
    page = admin.get(reverse("campaigns:list")).content.decode()
    url = reverse("campaigns:demo_again")
    assert f'<form id="demo-again" class="demo-again" method="get" action="{url}" hx-post="{url}"' in page
    assert 'hx-confirm="Run the demo again? The demo campaign that ran is deleted' in page
    asks = admin.get(url).content.decode()  # without JavaScript: a page that asks first
    assert f'<form method="post" action="{url}">' in asks and 'name="csrfmiddlewaretoken"' in asks
    assert f'href="{reverse("campaigns:detail", args=[first.pk])}">Demo campaign</a> (finished' in asks
    assert Campaign.objects.get().pk == first.pk  # asking changed nothing

    response = admin.post(reverse("campaigns:demo_again"))

    fresh = Campaign.objects.get()
    assert fresh.pk != first.pk and fresh.status == "draft" and SmtpServer.objects.get().max_msgs_per_conn == 0
    assert response.status_code == 302 and response.url == reverse("campaigns:detail", args=[fresh.pk])
    assert "is a fresh draft" in admin.get(response.url).content.decode()


def test_run_the_demo_again_is_a_post_and_leaves_a_running_demo_alone(login_as, client):

    demo()
    Campaign.objects.update(status="running")
    admin = login_as(Role.ADMIN)
    url = reverse("campaigns:demo_again")

    assert admin.put(url).status_code == 405
    assert client.post(url).url.startswith(reverse("login"))
    assert login_as(Role.SENDER).post(url).status_code == 403
    response = admin.post(url, headers={"HX-Request": "true"})

    assert response.status_code == 200 and response.headers["HX-Redirect"].startswith("/campaigns/")
    assert Campaign.objects.get().status == "running"
    assert "is running: cancel it (or let it finish)" in admin.get(response.headers["HX-Redirect"]).content.decode()


def test_a_campaign_of_a_users_named_like_the_demo_is_never_replaced():
    demo()
    Campaign.objects.update(status="finished")
    mine = Campaign.objects.create(name="Demo campaign", subject="s", from_email="a@example.test", status="finished")
    Delivery.objects.create(campaign=mine, subscriber=Subscriber.objects.first())

    demo()

    assert set(Campaign.objects.values_list("status", "is_demo")) == {("finished", False), ("draft", True)}
    assert mine.deliveries.count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite runs one writer at a time")
def test_a_retry_racing_the_reset_wins_cleanly_and_the_reset_leaves_the_campaign_as_it_is():
    demo()
    Campaign.objects.update(status="finished")
    ran = Campaign.objects.get()
    locked, release, outputs = threading.Event(), threading.Event(), []

    def retry():  # as Campaign.retry_failed does: the campaign's row locked, then back to running
        with transaction.atomic():
            ran.lock()
            locked.set()
            release.wait(5)
            Campaign.objects.filter(pk=ran.pk).update(status="running")
        connection.close()

    def reset():
        outputs.append(demo())
        connection.close()

    threads = [threading.Thread(target=retry), threading.Thread(target=reset)]
    threads[0].start()
    assert locked.wait(5)
    threads[1].start()
    time.sleep(0.5)  # the reset waits for the campaign's lock
    release.set()
    for thread in threads:
        thread.join(10)

    assert list(Campaign.objects.values_list("pk", "status")) == [(ran.pk, "running")]
    assert f"The demo campaign {ran.pk} is running: left as it is." in outputs[0]


def test_a_retry_after_the_reset_finds_the_campaign_gone_and_does_nothing():
    demo()
    Campaign.objects.update(status="finished")
    ran = Campaign.objects.get()

    demo()

    assert ran.retry_failed() == 0 and not Campaign.objects.filter(pk=ran.pk).exists()


def test_the_reset_undoes_only_what_learning_applied():
    demo()
    Campaign.objects.update(status="finished")
    server = SmtpServer.objects.get()
    server.max_conns = 12  # the admin's
    server.save()
    server.record_learned("msgs_per_conn", 9)
    server.apply_learned_limits()
    server.record_learned("max_conns", 4)  # learned, not applied

    demo()

    server.refresh_from_db()
    assert (server.max_msgs_per_conn, server.max_conns) == (0, 12)
    assert (server.learned_msgs_per_conn, server.learned_max_conns, server.before_learning) == (None, None, {})


def test_a_limit_edited_after_learning_applied_it_stays_as_edited():
    demo()
    Campaign.objects.update(status="finished")
    server = SmtpServer.objects.get()
    server.record_learned("msgs_per_conn", 9)
    server.apply_learned_limits()
    server.max_msgs_per_conn = 100  # the admin's, since
    server.save()

    demo()

    server.refresh_from_db()
    assert server.max_msgs_per_conn == 100 and server.before_learning == {}


def test_while_another_campaign_sends_through_the_sandbox_its_limits_stay_and_the_run_says_so(login_as):
    demo()
    Campaign.objects.update(status="finished")
    server = SmtpServer.objects.get()
    server.record_learned("msgs_per_conn", 9)
    server.apply_learned_limits()
    updated_at = SmtpServer.objects.get().updated_at
    other = Campaign.objects.create(name="Mine", subject="s", from_email="a@example.test", status="running")
    other.servers.add(server)

    out = demo()

    server.refresh_from_db()
    assert (server.max_msgs_per_conn, server.updated_at) == (9, updated_at)  # its pools are not rebuilt mid-run
    assert f"Note: “{SERVER_NAME}” kept the limits it learned: a campaign sending through it is under way." in out
    assert "which has forgotten any limits it learned" not in out
    assert Campaign.objects.filter(is_demo=True).get().status == "draft"  # the rest of the demo is ready


def test_with_the_shared_limits_store_out_of_reach_the_reset_says_so_and_the_database_part_stays_done(
    settings, closed_port, login_as
):
    demo()
    Campaign.objects.update(status="finished")
    SmtpServer.objects.update(learned_msgs_per_conn=9)
    reachable, settings.REDIS_URL = settings.REDIS_URL, f"redis://127.0.0.1:{closed_port}/0"
    store.cache_clear()
    try:
        out = demo()
        Campaign.objects.update(status="finished")
        admin = login_as(Role.ADMIN)
        response = admin.post(reverse("campaigns:demo_again"), follow=True)
    finally:
        settings.REDIS_URL = reachable
        store.cache_clear()

    assert "Note: The shared limits store is out of reach (ConnectionError)" in out
    assert SmtpServer.objects.get().learned_msgs_per_conn is None
    fresh = Campaign.objects.get()
    assert fresh.status == "draft" and response.status_code == 200
    page = response.content.decode()
    assert "is a fresh draft: launch it" in page and "The shared limits store is out of reach" in page


def test_upgrading_marks_the_campaigns_the_demo_made_and_no_other():
    demo()
    made = Campaign.objects.get()
    before = ("campaigns", "0014_rate_limit_blank_and_active_time")
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("campaigns")
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps.get_model("campaigns", "Campaign")
    mine = old.objects.create(name=made.name, subject="Our own demo", from_email=made.from_email, status="finished")

    MigrationExecutor(connection).migrate(latest)

    assert set(Campaign.objects.values_list("pk", "is_demo")) == {(made.pk, True), (mine.pk, False)}
