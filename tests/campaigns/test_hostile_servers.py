"""A campaign sent through a hostile SMTP server (tests/hostile.py): its deliveries are
deferred with a readable reason, in bounded time, nothing crashes, no reply the server
should not have sent reaches the database as a code, and no echoed credential is kept."""

import time

import pytest
from django.urls import reverse

from campaigns.models import Campaign, Delivery, Event
from smtp_settings.events import Kind
from tests.campaigns.test_sending import make_campaign, start_sending
from tests.hostile import endless
from tests.smtp_settings.test_hostile_servers import AUTH_LOGIN_ECHO, ECHO, PASSWORD, SECRET_FORMS, USER

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _retries_much_later(settings):
    """A sender leaves deferred deliveries for a later task instead of waiting for them."""
    settings.CAMPAIGN_RETRY_DELAY_S = 3600


def _outcomes(campaign: Campaign) -> set[tuple]:
    return set(campaign.deliveries.values_list("status", "last_code", "last_reply"))


def _event_texts(kind: str) -> list[str]:
    return list(Event.objects.filter(kind=kind).values_list("text", flat=True))


def test_a_mail_reply_without_end_defers_every_delivery(hostile_smtp, make_server):
    hostile = hostile_smtp(replies={"MAIL": endless("250-" + "A" * 70)})
    campaign = make_campaign([make_server(port=hostile.port)], 3)

    start_sending(campaign)

    assert _outcomes(campaign) == {
        (Delivery.Status.DEFERRED, None, "bad reply at MAIL, connection closed: the server's reply ran past 100 lines")
    }
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING  # waiting for the retries, not crashed
    # one row a connection: each is a lane's end in the connection timeline, never merged
    assert _event_texts(Kind.PROTOCOL_ERROR) == ["the server's reply ran past 100 lines"] * 3
    assert hostile.messages == 0


def test_a_mail_reply_at_a_byte_a_second_defers_within_send_timeout(hostile_smtp, make_server):
    hostile = hostile_smtp(byte_delay_s=1, slow={"MAIL"})
    campaign = make_campaign([make_server(port=hostile.port, send_timeout=2)], 3)

    started = time.monotonic()
    start_sending(campaign)

    assert time.monotonic() - started < 3 * 2 + 2  # at worst one send_timeout per message
    assert _outcomes(campaign) == {
        (Delivery.Status.DEFERRED, None, "connection lost at MAIL: no complete reply within 2 s")
    }


@pytest.mark.parametrize(
    ("stage", "reply"),
    [("MAIL", "999 out of range"), ("MAIL", "-45 negative"), ("RCPT", "abc")],
)
def test_a_reply_no_server_may_send_defers_without_a_code(hostile_smtp, make_server, stage, reply):
    hostile = hostile_smtp(replies={stage: reply})
    campaign = make_campaign([make_server(port=hostile.port)], 3)

    start_sending(campaign)

    [(status, code, text)] = _outcomes(campaign)
    assert (status, code) == (Delivery.Status.DEFERRED, None)
    assert text.startswith(f"bad reply at {stage}, connection closed: the server ")
    assert not campaign.deliveries.filter(ambiguous=True).exists()
    assert set(Event.objects.exclude(code=None).values_list("code", flat=True)) <= {220}  # the greetings
    assert hostile.connections == 3  # one per attempt: none reused after its bad reply


def test_a_bad_reply_to_the_final_dot_counts_as_maybe_delivered_never_sent_again(hostile_smtp, make_server):
    hostile = hostile_smtp(replies={"dot": "150 maybe later"})
    campaign = make_campaign([make_server(port=hostile.port)], 3)

    start_sending(campaign)

    [(status, code, text)] = _outcomes(campaign)
    assert (status, code) == (Delivery.Status.SENT, None)
    assert text.startswith("bad reply at dot, connection closed: the server ")
    assert campaign.deliveries.filter(ambiguous=True).count() == 3
    assert hostile.connections == 3  # one per message, each sent once


def _assert_nowhere(text: str) -> None:
    for form in SECRET_FORMS:
        assert form not in text


def _assert_not_shown(admin_client, campaign: Campaign) -> None:
    for url in (reverse("campaigns:detail", args=[campaign.pk]), reverse("logs:list"), reverse("logs:export")):
        response = admin_client.get(url)
        assert response.status_code == 200
        _assert_nowhere(b"".join(response).decode())


def test_credentials_echoed_at_auth_are_not_kept(hostile_smtp, make_server, admin_client):
    hostile = hostile_smtp(replies={"AUTH": AUTH_LOGIN_ECHO})
    server = make_server(port=hostile.port, auth_protocol="login", username=USER, password=PASSWORD)
    campaign = make_campaign([server], 2)

    start_sending(campaign)

    [(status, code, text)] = _outcomes(campaign)
    assert (status, code) == (Delivery.Status.DEFERRED, 535)
    assert text.startswith("5.7.8 bad credentials for [redacted]:[redacted]")
    _assert_nowhere(text)
    [event_text] = _event_texts(Kind.CONNECT_FAILED)
    assert "[redacted]" in event_text
    _assert_nowhere(event_text)
    _assert_not_shown(admin_client, campaign)


def test_credentials_echoed_in_a_recipients_reply_are_not_kept(hostile_smtp, make_server, admin_client):
    hostile = hostile_smtp(replies={"RCPT": f"550 5.1.1 {ECHO}"})
    server = make_server(port=hostile.port, auth_protocol="plain", username=USER, password=PASSWORD)
    campaign = make_campaign([server], 2)

    start_sending(campaign)

    [(status, code, text)] = _outcomes(campaign)
    assert (status, code) == (Delivery.Status.FAILED, 550)
    assert "[redacted]" in text
    _assert_nowhere(text)
    event_texts = _event_texts(Kind.FAILURE)
    assert len(event_texts) == 2 and all("[redacted]" in text for text in event_texts)
    _assert_nowhere(" ".join(event_texts))
    _assert_not_shown(admin_client, campaign)
