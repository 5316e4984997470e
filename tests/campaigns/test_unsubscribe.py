"""The unsubscribe link: no login, GET asks, POST (a person's or an RFC 8058 one-click) unsubscribes."""

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, Subscriber
from campaigns.rendering import CampaignRenderer, UnsubscribeLinks, unsubscribe_url
from smtp_settings.bounces.record import suppress
from smtp_settings.models import Suppression
from tests.campaigns.conftest import SITE

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("site_url")]


@pytest.fixture
def ana():
    return Subscriber.objects.create(email="ana@example.test", name="Ana")


@pytest.fixture
def campaign():
    return Campaign.objects.create(name="News", subject="Hi", from_email="news@example.test", text_body="Hi")


def _path(subscriber_id: int, campaign_id: int | None = None) -> str:
    return unsubscribe_url(subscriber_id, campaign_id).removeprefix(SITE)


def test_get_asks_to_confirm_without_login_and_changes_nothing(client, ana, campaign):
    response = client.get(_path(ana.pk, campaign.pk))

    content = response.content.decode()
    assert response.status_code == 200
    assert "Unsubscribe?" in content and "ana@example.test" in content
    assert '<form method="post" action="">' in content
    assert 'aria-label="Main"' not in content  # no dashboard navigation for subscribers
    ana.refresh_from_db()
    assert ana.status == Subscriber.Status.ACTIVE


def test_post_unsubscribes(client, ana, campaign):
    response = client.post(_path(ana.pk, campaign.pk))

    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    ana.refresh_from_db()
    assert ana.status == Subscriber.Status.UNSUBSCRIBED and ana.unsubscribed_at is not None


def test_one_click_post_works_without_cookies_or_csrf_token(ana, campaign):
    mailbox_provider = Client(enforce_csrf_checks=True)

    response = mailbox_provider.post(
        _path(ana.pk, campaign.pk), "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 200
    ana.refresh_from_db()
    assert ana.status == Subscriber.Status.UNSUBSCRIBED


def test_the_link_in_a_message_unsubscribes_its_recipient(client, ana, campaign):
    message = CampaignRenderer(campaign).message(ana, "<m1@example.test>")
    url = message.extra_headers["List-Unsubscribe"].strip("<>")

    client.post(url.removeprefix(SITE))

    ana.refresh_from_db()
    assert ana.status == Subscriber.Status.UNSUBSCRIBED


def test_unsubscribing_puts_the_address_on_the_suppression_list(client, ana, campaign):
    client.get(_path(ana.pk, campaign.pk))
    assert not Suppression.objects.exists()  # asking is not unsubscribing

    client.post(_path(ana.pk, campaign.pk))

    entry = Suppression.objects.get()
    assert (entry.email, entry.reason, entry.note) == ("ana@example.test", "unsubscribe", "With the link in “News”.")


def test_an_address_on_the_list_already_keeps_its_first_reason(client, ana):
    suppress("ana@example.test", Suppression.Reason.COMPLAINT, "spam report")

    client.post(_path(ana.pk))

    assert list(Suppression.objects.values_list("email", "reason", "note")) == [
        ("ana@example.test", "complaint", "spam report")
    ]
    assert Subscriber.objects.get(pk=ana.pk).status == Subscriber.Status.UNSUBSCRIBED


def test_unsubscribing_twice_keeps_the_first_time(client, ana):
    client.post(_path(ana.pk))
    first = Subscriber.objects.get(pk=ana.pk).unsubscribed_at

    response = client.post(_path(ana.pk))

    assert response.status_code == 200
    assert Subscriber.objects.get(pk=ana.pk).unsubscribed_at == first


def test_an_already_unsubscribed_subscriber_is_told_so(client, ana):
    ana.set_status(Subscriber.Status.UNSUBSCRIBED)

    content = client.get(_path(ana.pk)).content.decode()

    assert "already receives no campaigns" in content and "<form" not in content.split("<main>")[1]


def test_a_blocklisted_subscriber_stays_blocklisted(client, ana):
    ana.set_status(Subscriber.Status.BLOCKLISTED)

    response = client.post(_path(ana.pk))

    assert response.status_code == 200
    ana.refresh_from_db()
    assert ana.status == Subscriber.Status.BLOCKLISTED
    assert Suppression.objects.get().email == "ana@example.test"  # and nothing reaches them


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(
    "token",
    [
        lambda ana: _path(ana.pk).split("/")[2].replace(f"{ana.pk}.", f"{ana.pk + 1}.", 1),
        lambda ana: _path(ana.pk).split("/")[2][:-3] + "abc",
        lambda ana: str(ana.pk),
        lambda ana: "%3Cscript%3E",
    ],
    ids=["other-subscriber", "bad-signature", "unsigned", "garbage"],
)
def test_a_tampered_link_is_a_friendly_404_that_changes_nothing(client, ana, method, token):
    response = getattr(client, method)(reverse("unsubscribe", args=[token(ana)]))

    assert response.status_code == 404
    assert "This unsubscribe link is not valid" in response.content.decode()
    assert Subscriber.objects.get(pk=ana.pk).status == Subscriber.Status.ACTIVE
    assert not Suppression.objects.exists()


def test_a_link_for_a_deleted_subscriber_is_a_friendly_404(client, ana):
    path = _path(ana.pk)
    ana.delete()

    response = client.post(path)

    assert response.status_code == 404
    assert "no longer on our lists" in response.content.decode()


def test_other_methods_are_refused(client, ana):
    assert client.put(_path(ana.pk)).status_code == 405


def test_a_test_messages_link_of_a_deleted_campaign_still_says_it_was_a_test(client, campaign):
    link = UnsubscribeLinks(campaign.pk, test=True).url(0).removeprefix(SITE)
    campaign.delete()

    content = client.get(link).content.decode()

    assert "This was a test message." in content and "Nothing was changed." in content


def test_a_test_token_cannot_pass_for_a_subscribers_and_the_reverse(client, ana, campaign):
    """The two kinds are signed apart: neither is read as the other."""
    real = _path(ana.pk, campaign.pk)
    test = UnsubscribeLinks(campaign.pk, test=True).url(ana.pk).removeprefix(SITE)

    assert "Unsubscribe?" in client.get(real).content.decode()
    client.post(test)
    ana.refresh_from_db()
    assert ana.status == Subscriber.Status.ACTIVE
