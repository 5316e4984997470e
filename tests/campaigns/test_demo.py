"""`manage.py demo`: something to launch on a fresh install, made once however often it runs,
and ready to show the sandbox's 421s again each time it runs."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from campaigns.demo import DEMO_SANDBOX_PORT, SERVER_NAME, SES_CAP
from campaigns.models import Campaign, Subscriber
from project.roles import Role
from smtp_settings.limit_stores import store
from smtp_settings.models import SmtpServer
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
    Campaign.objects.create(name=finished.name, subject="s", from_email="a@example.test")  # the old second draft

    demo()

    assert Campaign.objects.filter(name=finished.name).count() == 1
    assert Campaign.objects.get().status == "draft"


def test_admins_see_run_the_demo_again_once_it_has_run_and_get_a_fresh_draft(login_as):

    demo()
    first = Campaign.objects.get()
    admin, sender = login_as(Role.ADMIN), login_as(Role.SENDER)
    assert 'id="demo-again"' not in admin.get(reverse("campaigns:list")).content.decode()  # a draft: nothing to redo
    Campaign.objects.update(status="finished")
    SmtpServer.objects.update(max_msgs_per_conn=9)
    assert 'id="demo-again"' not in sender.get(reverse("campaigns:list")).content.decode()
    page = admin.get(reverse("campaigns:list")).content.decode()
    assert f'<form id="demo-again" class="demo-again" method="post" action="{reverse("campaigns:demo_again")}">' in page
    assert 'name="csrfmiddlewaretoken"' in page

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

    assert admin.get(url).status_code == 405
    assert client.post(url).url.startswith(reverse("login"))
    assert login_as(Role.SENDER).post(url).status_code == 403
    response = admin.post(url, headers={"HX-Request": "true"})

    assert response.status_code == 200 and response.headers["HX-Redirect"].startswith("/campaigns/")
    assert Campaign.objects.get().status == "running"
    assert "is running: cancel it (or let it finish)" in admin.get(response.headers["HX-Redirect"]).content.decode()
