"""Deleting an SMTP server that campaigns use: they are named first, a campaign under way
holds its servers, and one that sent keeps the name of what it went out through."""

import threading
import time
from html import unescape

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from smtp_settings.deletion import server_users
from smtp_settings.models import ApiToken, SmtpServer
from tests.campaigns.test_sending import make_campaign

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def server(make_server):
    return make_server(name="Old SES")


def _campaign(servers, name: str, status: str) -> Campaign:
    campaign = make_campaign(servers, 1, status=status)
    started = None if status == "draft" else timezone.now()
    Campaign.objects.filter(pk=campaign.pk).update(name=name, started_at=started)
    campaign.refresh_from_db()
    return campaign


def _delete_url(server) -> str:
    return reverse("smtp_settings:delete", args=[server.pk])


def test_the_card_leads_to_a_confirmation_that_names_every_campaign_using_the_server(admin_client, server):
    finished = _campaign([server], "Spring news", "finished")
    draft = _campaign([server], "Summer news", "draft")

    card = admin_client.get(reverse("smtp_settings:list")).content.decode()
    assert f'<a href="{_delete_url(server)}" class="danger">Delete…</a>' in card
    content = admin_client.get(_delete_url(server)).content.decode()

    assert "Used by" in content
    finished_url, draft_url = (reverse("campaigns:detail", args=[c.pk]) for c in (finished, draft))
    assert f'Campaign <a href="{finished_url}">Spring news</a>: Finished: it keeps the server&#x27;s name.' in content
    assert f'Campaign <a href="{draft_url}">Summer news</a>: Draft: the server is taken off its list.' in content
    assert "Delete server</button>" in content


def test_the_confirmation_names_relay_logins_and_tokens_that_send_through_it(admin_client, server, make_server):
    ApiToken.issue("Shop", [server])
    ApiToken.issue("Billing", [server, make_server(name="Backup")])

    content = admin_client.get(_delete_url(server)).content.decode()

    access = reverse("access:index")
    assert f'API token <a href="{access}">Shop</a>: its mail takes the relay&#x27;s default route.' in content
    assert f'API token <a href="{access}">Billing</a>: its other servers carry its mail.' in content


@pytest.mark.parametrize("status", ["running", "paused", "scheduled"])
def test_while_a_campaign_using_it_is_under_way_the_page_offers_to_disable_instead(admin_client, server, status):
    _campaign([server], "Spring news", status)

    content = admin_client.get(_delete_url(server)).content.decode()

    assert "cannot be deleted while a campaign that uses it is under way" in content
    assert "Delete server</button>" not in content
    assert f'action="{reverse("smtp_settings:toggle", args=[server.pk])}"' in content
    assert "Disable the server instead</button>" in content


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
@pytest.mark.parametrize("status", ["running", "paused", "scheduled"])
def test_deleting_is_refused_while_a_campaign_using_it_is_under_way(admin_client, server, make_server, status, headers):
    campaign = _campaign([server, make_server(name="Backup")], "Spring news", status)

    response = admin_client.post(_delete_url(server), **headers)

    assert SmtpServer.objects.filter(pk=server.pk).exists()
    assert list(campaign.servers.values_list("name", flat=True)) == ["Backup", "Old SES"]
    if headers:
        assert response.status_code == 200 and response["HX-Redirect"] == _delete_url(server)
    else:
        assert response.status_code == 302 and response.url == _delete_url(server)
    page = admin_client.get(_delete_url(server)).content.decode()
    assert "“Old SES” was not deleted: campaign “Spring news” still send through it." in page


def test_deleting_keeps_the_name_on_campaigns_that_sent_and_takes_it_off_drafts(
    admin_client, sender_client, server, make_server
):
    backup = make_server(name="Backup")
    finished = _campaign([server], "Spring news", "finished")
    cancelled = _campaign([server, backup], "Autumn news", "cancelled")
    draft = _campaign([server, backup], "Summer news", "draft")

    response = admin_client.post(_delete_url(server))

    assert response.status_code == 302 and response.url == reverse("smtp_settings:list")
    assert not SmtpServer.objects.filter(pk=server.pk).exists()
    for campaign, names, deleted in [
        (finished, [], ["Old SES"]),
        (cancelled, ["Backup"], ["Old SES"]),
        (draft, ["Backup"], []),
    ]:
        campaign.refresh_from_db()
        assert list(campaign.servers.values_list("name", flat=True)) == names, campaign.name
        assert campaign.deleted_servers == deleted, campaign.name
    page = sender_client.get(reverse("campaigns:detail", args=[finished.pk])).content.decode()
    assert '<dd>Old SES <span class="help">(deleted since)</span></dd>' in page
    page = sender_client.get(reverse("campaigns:detail", args=[cancelled.pk])).content.decode()
    assert '<dd>Backup, Old SES <span class="help">(deleted since)</span></dd>' in page


def test_deleting_with_htmx_goes_back_to_the_list(admin_client, server):
    _campaign([server], "Spring news", "finished")

    response = admin_client.post(_delete_url(server), **HTMX)

    assert response["HX-Redirect"] == reverse("smtp_settings:list")
    assert not SmtpServer.objects.exists()


def test_the_admin_will_not_delete_a_server_a_campaign_under_way_uses(admin_client, server):
    _campaign([server], "Spring news", "running")
    url = reverse("admin:smtp_settings_smtpserver_delete", args=[server.pk])

    page = admin_client.get(url).content.decode()
    response = admin_client.post(url, {"post": "yes"})

    assert "Campaign “Spring news” (Running: the server stays until it is over)" in page
    assert response.status_code == 200 and SmtpServer.objects.filter(pk=server.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_launch_racing_the_delete_is_seen_and_the_server_kept(admin_client, make_server):
    """The launch's UPDATE is not committed yet when the delete starts: the delete waits for
    the campaign's row (PostgreSQL) or the database (SQLite) and then sees it running."""
    server = make_server(name="Old SES")
    campaign = _campaign([server], "Spring news", "draft")
    updated = threading.Event()

    def launch():
        try:
            with transaction.atomic():  # what Campaign.launch does, held open a moment
                Campaign.objects.filter(pk=campaign.pk, status="draft").update(status="running")
                updated.set()
                time.sleep(0.5)
        finally:
            connection.close()

    launcher = threading.Thread(target=launch)
    launcher.start()
    assert updated.wait(5)
    response = admin_client.post(_delete_url(server))
    launcher.join()

    assert response.url == _delete_url(server)
    assert SmtpServer.objects.filter(pk=server.pk).exists()
    assert list(campaign.servers.values_list("name", flat=True)) == ["Old SES"]


@pytest.fixture
def launched_after_the_check():
    """A launch that comes right after the admin has checked what uses the server (its answer
    to `server_users`), before the delete: the pre_delete check then refuses."""
    launching = []

    def launch(sender, server, **kwargs):
        Campaign.objects.filter(pk__in=launching).update(status="running")
        return []

    server_users.connect(launch, dispatch_uid="test.launch")
    yield launching
    server_users.disconnect(dispatch_uid="test.launch")


@pytest.mark.parametrize("how", ["delete page", "delete action"])
def test_the_admin_refuses_a_delete_a_launch_raced_with_a_message(admin_client, server, launched_after_the_check, how):
    campaign = _campaign([server], "Spring news", "draft")
    launched_after_the_check.append(campaign.pk)
    if how == "delete page":
        url = reverse("admin:smtp_settings_smtpserver_delete", args=[server.pk])
        response = admin_client.post(url, {"post": "yes"}, follow=True)
    else:
        url = reverse("admin:smtp_settings_smtpserver_changelist")
        form = {"action": "delete_selected", "_selected_action": [server.pk], "post": "yes"}
        response = admin_client.post(url, form, follow=True)

    page = response.content.decode()
    assert response.status_code == 200 and response.redirect_chain[0][0].endswith(url)
    assert "“Old SES” was not deleted: campaign “Spring news” still send" in unescape(page)
    assert "deleted successfully" not in page
    assert SmtpServer.objects.filter(pk=server.pk).exists()
    assert not LogEntry.objects.exists()  # nothing said to be deleted
