"""Writing campaigns: list, create, edit, detail, preview, test message and delete, with and without htmx."""

import re
import time
from email import message_from_bytes, policy

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.signing import BadSignature
from django.urls import reverse

from campaigns.forms import CampaignForm
from campaigns.models import Campaign, Delivery, MailingList, Subscriber
from campaigns.rendering import read_test_unsubscribe_token, read_unsubscribe_token
from campaigns.sending import loop
from campaigns.views import preview
from campaigns.views.compose import _save_if_editable
from smtp_settings.events import Kind
from smtp_settings.models import Suppression
from tests.campaigns.conftest import SITE

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("site_url")]

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def news():
    mailing_list = MailingList.objects.create(name="News")
    for email, name in [("ana@example.test", "Ana"), ("ben@example.test", "Ben")]:
        Subscriber.objects.create(email=email, name=name, attributes={"city": "Porto"}).lists.add(mailing_list)
    return mailing_list


@pytest.fixture
def server(make_server):
    return make_server(name="Relay")


@pytest.fixture
def make_campaign(news, server):
    def make(**overrides) -> Campaign:
        fields = {
            "name": "Spring news",
            "subject": "Hello {{ subscriber.name }}",
            "from_email": "News <news@example.test>",
            "html_body": "<p>Hi {{ subscriber.name }} from {{ subscriber.attributes.city }}</p>",
        }
        campaign = Campaign.objects.create(**(fields | overrides))
        campaign.lists.add(news)
        campaign.servers.add(server)
        return campaign

    return make


@pytest.fixture
def campaign(make_campaign):
    return make_campaign()


def _form_data(news, server, **overrides) -> dict:
    data = {
        "name": "Autumn news",
        "subject": "News for {{ subscriber.name }}",
        "from_email": "Relaydeck <news@example.test>",
        "reply_to": "",
        "html_body": "<h1>Hi {{ subscriber.name }}</h1>\n<p>News from {{ subscriber.attributes.city }}.</p>",
        "text_body": "",
        "lists": [news.pk],
        "servers": [server.pk],
        "scheduled_at": "",
        "rate_limit": "0",
        "auto_pause_after": "50",
        "max_complaint_rate": "0.3",
        "max_hard_bounce_rate": "5",
        "guard_min_sample": "1000",
    }
    return data | overrides


def test_every_page_requires_login(client, campaign):
    pages = ["list", "create"] + [(name, campaign.pk) for name in ("detail", "edit", "preview", "delete")]
    for page in pages:
        name, args = (page, []) if isinstance(page, str) else (page[0], [page[1]])
        response = client.get(reverse(f"campaigns:{name}", args=args))
        assert response.status_code == 302 and response.url.startswith(reverse("login")), name
    for name in ("test_send", "delete", "edit"):
        response = client.post(reverse(f"campaigns:{name}", args=[campaign.pk]), {"to_email": "a@example.test"})
        assert response.status_code == 302 and response.url.startswith(reverse("login")), name
    response = client.post(reverse("campaigns:create"), {"name": "x"})
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert Campaign.objects.get().name == "Spring news"


def test_home_is_the_campaign_list(sender_client):
    response = sender_client.get("/")
    assert response.status_code == 302 and response.url == reverse("campaigns:list")


def test_list_shows_each_campaign_with_its_status_and_progress(sender_client, make_campaign):
    draft = make_campaign(name="Draft one")
    running = make_campaign(name="Running one", status=Campaign.Status.RUNNING)
    for subscriber, status in zip(
        Subscriber.objects.all(), [Delivery.Status.SENT, Delivery.Status.PENDING], strict=True
    ):
        Delivery.objects.create(campaign=running, subscriber=subscriber, status=status)

    response = sender_client.get(reverse("campaigns:list"))

    content = response.content.decode()
    assert reverse("campaigns:detail", args=[draft.pk]) in content
    assert 'class="badge status-draft">Draft' in content and 'class="badge status-running">Running' in content
    assert "1 / 2" in content and 'value="50.0"' in content
    assert reverse("campaigns:create") in content


def test_an_empty_list_invites_to_write_a_campaign(sender_client):
    response = sender_client.get(reverse("campaigns:list"))
    assert "No campaigns yet" in response.content.decode()


def test_the_form_offers_only_enabled_servers(sender_client, make_server):
    make_server(name="Enabled relay")
    make_server(name="Switched off", enabled=False)

    content = sender_client.get(reverse("campaigns:create")).content.decode()

    assert "Enabled relay" in content and "Switched off" not in content
    assert 'type="datetime-local"' in content


def test_create_saves_the_campaign_with_its_lists_and_servers(sender_client, news, server):
    data = _form_data(news, server, scheduled_at="2031-05-04T09:30", rate_limit="12.5", reply_to="help@example.test")

    response = sender_client.post(reverse("campaigns:create"), data)

    campaign = Campaign.objects.get()
    assert response.status_code == 302 and response.url == reverse("campaigns:detail", args=[campaign.pk])
    assert (campaign.name, campaign.status, campaign.rate_limit) == ("Autumn news", "draft", 12.5)
    assert campaign.reply_to == "help@example.test"
    assert campaign.scheduled_at.isoformat() == "2031-05-04T09:30:00+00:00"
    assert list(campaign.lists.all()) == [news] and list(campaign.servers.all()) == [server]


@pytest.mark.parametrize("blank", ["", "0"])
def test_a_blank_rate_limit_means_the_servers_limits_only(sender_client, news, server, blank):
    """The form's first submit must not fail on it: blank (or 0, as it used to be) is no campaign limit."""
    response = sender_client.post(reverse("campaigns:create"), _form_data(news, server, rate_limit=blank), follow=True)

    campaign = Campaign.objects.get()
    assert campaign.rate_limit is None
    assert "<dt>Rate</dt><dd>the servers' limits only</dd>" in response.content.decode()


def test_the_new_campaign_form_says_what_a_blank_rate_limit_means(sender_client):
    content = sender_client.get(reverse("campaigns:create")).content.decode()

    assert "Blank or 0: the servers&#x27; limits only." in content
    assert not re.search(r'name="rate_limit"[^>]*required', content)


def test_create_saves_the_guard_rails(sender_client, news, server):
    data = _form_data(news, server, max_complaint_rate="0.1", max_hard_bounce_rate="0", guard_min_sample="500")

    sender_client.post(reverse("campaigns:create"), data)

    campaign = Campaign.objects.get()
    assert (campaign.max_complaint_rate, campaign.max_hard_bounce_rate, campaign.guard_min_sample) == (0.1, 0, 500)
    content = sender_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert "pause above 0.1% complaints, once 500 messages are sent" in content


def test_create_with_htmx_answers_with_a_client_redirect(sender_client, news, server):
    response = sender_client.post(reverse("campaigns:create"), _form_data(news, server), **HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("campaigns:detail", args=[Campaign.objects.get().pk])


@pytest.mark.parametrize(
    "field, source, label, line",
    [
        ("subject", "Hi {{ subscriber.name|shout }}", "Subject", 1),
        ("html_body", "<p>Hi</p>\n<ul>\n{% for t in subscriber.attributes.tags %}\n<li>{{ t }}</ul>", "HTML body", 3),
        ("text_body", "Hi\n\n{% endif %}", "Text body", 3),
    ],
)
@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_a_template_syntax_error_names_the_field_and_line_and_saves_nothing(
    sender_client, news, server, field, source, label, line, headers
):
    response = sender_client.post(reverse("campaigns:create"), _form_data(news, server, **{field: source}), **headers)

    assert response.status_code == 200
    content = response.content.decode()
    assert "Nothing was saved" in content
    assert f">{label}</a>: Template error on line {line}: " in content
    assert Campaign.objects.count() == 0
    assert MailingList.campaigns.through.objects.count() == 0


@pytest.mark.parametrize(
    "overrides, label, message",
    [
        ({"from_email": "news at example"}, "From", "Enter an address, or a name and an address"),
        ({"from_email": "News <news@example>"}, "From", "“news@example” is not a valid email address."),
        ({"from_email": "a@example.test, b@example.test"}, "From", "Enter an address, or a name and an address"),
        ({"reply_to": "Help <help@example>"}, "Reply-To", "is not a valid email address"),
        ({"html_body": "", "text_body": ""}, "HTML body", "Write an HTML body, a text body, or both."),
        ({"servers": []}, "Servers", "This field is required."),
        ({"lists": []}, "Lists", "This field is required."),
        ({"rate_limit": "-1"}, "Rate limit", "Enter a number from 0 to 100,000."),
        ({"auto_pause_after": "-5"}, "Auto pause after", "Enter a whole number from 0 to 1,000,000."),
        ({"max_complaint_rate": "101"}, "Complaint rate limit (%)", "Enter a number from 0 to 100."),
        ({"max_hard_bounce_rate": "-1"}, "Hard-bounce rate limit (%)", "Enter a number from 0 to 100."),
        ({"max_hard_bounce_rate": "five"}, "Hard-bounce rate limit (%)", "Enter a number from 0 to 100."),
        ({"guard_min_sample": "0"}, "Minimum sample", "Enter a whole number from 1 to 100,000,000."),
        ({"scheduled_at": "next tuesday"}, "Send at", "Enter a valid date/time."),
        ({"name": ""}, "Name", "This field is required."),
    ],
)
def test_invalid_input_names_the_field_and_saves_nothing(sender_client, news, server, overrides, label, message):
    response = sender_client.post(reverse("campaigns:create"), _form_data(news, server, **overrides))

    content = response.content.decode()
    assert response.status_code == 200
    assert f">{label}</a>: " in content and message in content
    assert Campaign.objects.count() == 0


def test_a_disabled_server_cannot_be_chosen(sender_client, news, make_server):
    disabled = make_server(name="Off", enabled=False)

    response = sender_client.post(reverse("campaigns:create"), _form_data(news, disabled))

    assert "Select a valid choice" in response.content.decode()
    assert Campaign.objects.count() == 0


def test_edit_saves_the_changes(sender_client, campaign, news, server):
    other = MailingList.objects.create(name="Other")
    data = _form_data(news, server, name="Renamed", lists=[other.pk], text_body="Plain {{ subscriber.name }}")

    response = sender_client.post(reverse("campaigns:edit", args=[campaign.pk]), data)

    assert response.status_code == 302 and response.url == reverse("campaigns:detail", args=[campaign.pk])
    campaign.refresh_from_db()
    assert (campaign.name, campaign.text_body) == ("Renamed", "Plain {{ subscriber.name }}")
    assert list(campaign.lists.all()) == [other]


def test_edit_form_shows_the_current_values(sender_client, make_campaign):
    campaign = make_campaign(html_body="<p>{{ subscriber.name }}</p>")

    content = sender_client.get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()

    assert "&lt;p&gt;{{ subscriber.name }}&lt;/p&gt;" in content
    assert 'value="News &lt;news@example.test&gt;"' in content


@pytest.mark.parametrize("status", [Campaign.Status.RUNNING, Campaign.Status.PAUSED, Campaign.Status.FINISHED])
@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_edit_is_refused_once_launched(sender_client, make_campaign, news, server, status, headers):
    campaign = make_campaign(status=status)
    detail = reverse("campaigns:detail", args=[campaign.pk])
    url = reverse("campaigns:edit", args=[campaign.pk])

    get = sender_client.get(url, **headers)
    post = sender_client.post(url, _form_data(news, server, name="Changed"), **headers)

    for response in (get, post):
        if headers:
            assert response["HX-Redirect"] == detail
        else:
            assert response.status_code == 302 and response.url == detail
    campaign.refresh_from_db()
    assert campaign.name == "Spring news" and campaign.status == status
    assert "can no longer be edited" in sender_client.get(detail).content.decode()


def test_an_edit_loses_to_a_launch_in_between(campaign, news, server):
    form = CampaignForm(_form_data(news, server, name="Changed"), instance=campaign)
    assert form.is_valid()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)

    assert _save_if_editable(form) is False

    campaign.refresh_from_db()
    assert (campaign.name, campaign.status) == ("Spring news", "running")


def test_an_edit_never_overwrites_what_a_sender_changed(campaign, news, server):
    form = CampaignForm(_form_data(news, server, name="Changed"), instance=campaign)
    assert form.is_valid()
    Campaign.objects.filter(pk=campaign.pk).update(reconnects=3)

    assert _save_if_editable(form) is True

    campaign.refresh_from_db()
    assert (campaign.name, campaign.reconnects) == ("Changed", 3)


def test_clearing_the_time_of_a_scheduled_campaign_makes_it_a_draft(sender_client, make_campaign, news, server):
    campaign = make_campaign(status=Campaign.Status.SCHEDULED)

    sender_client.post(reverse("campaigns:edit", args=[campaign.pk]), _form_data(news, server, scheduled_at=""))

    campaign.refresh_from_db()
    assert (campaign.status, campaign.scheduled_at) == ("draft", None)


def test_detail_shows_settings_progress_and_test_form(sender_client, make_campaign, server):
    campaign = make_campaign(reply_to="help@example.test", rate_limit=5)

    response = sender_client.get(reverse("campaigns:detail", args=[campaign.pk]))

    content = response.content.decode()
    assert 'id="campaign-progress"' in content  # the live progress and actions block
    assert "News &lt;news@example.test&gt;" in content and "help@example.test" in content
    assert "News" in content and server.name in content and "5 msg/s" in content
    assert reverse("campaigns:preview", args=[campaign.pk]) in content
    assert reverse("campaigns:test_send", args=[campaign.pk]) in content
    assert reverse("campaigns:edit", args=[campaign.pk]) in content


def test_detail_of_a_running_campaign_offers_no_edit(sender_client, make_campaign):
    campaign = make_campaign(status=Campaign.Status.RUNNING)

    content = sender_client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()

    assert reverse("campaigns:edit", args=[campaign.pk]) not in content
    assert reverse("campaigns:delete", args=[campaign.pk]) not in content


def test_preview_renders_the_message_for_the_first_subscriber(sender_client, make_campaign):
    campaign = make_campaign(html_body='<p>Hi {{ subscriber.name }}</p><script>alert("x")</script>')

    response = sender_client.get(reverse("campaigns:preview", args=[campaign.pk]))

    content = response.content.decode()
    assert "Hello Ana" in content  # the subject
    assert "ana@example.test" in content
    # The HTML part is shown in a sandboxed frame of its own address (tests/test_security.py has its policy).
    frame = reverse("campaigns:preview_html", args=[campaign.pk])
    assert f'<iframe class="html-part" sandbox src="{frame}"' in content
    assert "<script>alert" not in content
    assert '<pre class="text-part">Hi Ana</pre>' in content
    assert sender_client.get(frame).content.decode() == '<p>Hi Ana</p><script>alert("x")</script>'


def test_preview_escapes_what_subscribers_typed_in_every_part(sender_client, make_campaign):
    campaign = make_campaign(subject="For {{ subscriber.name }}", text_body="Text for {{ subscriber.name }}")
    Subscriber.objects.filter(email="ana@example.test").update(name='<script>alert("x")</script>')

    content = sender_client.get(reverse("campaigns:preview", args=[campaign.pk])).content.decode()
    html_part = sender_client.get(reverse("campaigns:preview_html", args=[campaign.pk])).content.decode()

    assert "<script>" not in content
    assert "For &lt;script&gt;" in content and "Text for &lt;script&gt;" in content
    assert html_part.startswith("<p>Hi &lt;script&gt;")
    assert f"&lt;{SITE}/u/" in content  # List-Unsubscribe


def test_preview_without_subscribers_uses_an_example(sender_client, make_campaign):
    campaign = make_campaign()
    campaign.lists.clear()

    content = sender_client.get(reverse("campaigns:preview", args=[campaign.pk])).content.decode()

    assert "Hello Jane Example" in content and "an example subscriber" in content


def test_preview_of_a_template_that_fails_says_why(sender_client, make_campaign):
    campaign = make_campaign(html_body="<p>Hi</p>\n{{ subscriber.attributes.city|divisibleby:0 }}")

    response = sender_client.get(reverse("campaigns:preview", args=[campaign.pk]))

    assert response.status_code == 200
    assert "cannot be rendered" in response.content.decode() and "line 2" in response.content.decode()
    assert sender_client.get(reverse("campaigns:preview_html", args=[campaign.pk])).status_code == 404


def test_a_text_only_campaign_has_no_html_part_to_frame(admin_client, make_campaign):
    campaign = make_campaign(html_body="", text_body="Hi {{ subscriber.name }}")

    assert "<iframe" not in admin_client.get(reverse("campaigns:preview", args=[campaign.pk])).content.decode()
    assert admin_client.get(reverse("campaigns:preview_html", args=[campaign.pk])).status_code == 404


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_test_send_delivers_one_message_through_the_first_enabled_server(
    sender_client, make_campaign, make_server, smtp_sandbox, headers
):
    sandbox = smtp_sandbox()
    campaign = make_campaign()
    campaign.servers.set([make_server(name="Off", enabled=False), make_server(name="Sandbox", port=sandbox.port)])

    response = sender_client.post(
        reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "tester@example.test"}, **headers
    )

    assert response.status_code == 200
    assert len(sandbox.received) == 1
    received = sandbox.received[0]
    assert received.rcpt_tos == ("tester@example.test",) and received.mail_from == "news@example.test"
    parsed = message_from_bytes(received.data, policy=policy.default)
    assert parsed["Subject"] == "Hello Ana"  # rendered for the sample subscriber
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = parsed["List-Unsubscribe"].strip().removeprefix(f"<{SITE}/u/").removesuffix("/>")
    assert read_test_unsubscribe_token(token) == campaign.pk  # a test's link: it unsubscribes nobody
    content = response.content.decode()
    assert "✔ Accepted for tester@example.test" in content and "Sandbox" in content
    assert "250" in content and received.message_id.strip().replace("<", "&lt;").replace(">", "&gt;") in content
    assert ('id="test-send-result"' in content) and (("<html" in content) != bool(headers))


def test_the_test_sends_connection_is_logged_as_the_campaigns(
    sender_client, make_campaign, make_server, smtp_sandbox, pool_events
):
    campaign = make_campaign()
    campaign.servers.set([make_server(name="Sandbox", port=smtp_sandbox().port)])

    sender_client.post(reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "tester@example.test"})

    assert {event.kind for event in pool_events} >= {"connect"}
    assert {event.context.get("campaign_id") for event in pool_events} == {campaign.pk}


def test_a_test_sends_421s_are_logged_as_the_campaigns_but_not_counted_in_its_tallies(
    sender_client, make_campaign, make_server, smtp_sandbox, pool_events
):
    campaign = make_campaign()
    busy = smtp_sandbox(refuse_with="421 4.7.0 Try again later, closing connection")
    campaign.servers.set([make_server(name="Busy", port=busy.port)])

    sender_client.post(reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "tester@example.test"})
    loop._flush_tally(campaign.pk)  # as a worker sending this campaign does

    refused = [event for event in pool_events if event.kind in (Kind.SESSION_CLOSED_421, Kind.RECONNECT)]
    assert refused and {event.context["campaign_id"] for event in refused} == {campaign.pk}
    campaign.refresh_from_db()
    assert (campaign.sessions_closed_421, campaign.reconnects, campaign.rotations) == (0, 0, 0)


def test_test_send_to_a_subscriber_renders_for_them_and_its_link_says_it_was_a_test(
    sender_client, client, make_campaign, make_server, smtp_sandbox
):
    sandbox = smtp_sandbox()
    campaign = make_campaign(html_body="<p>Hi {{ subscriber.name }}</p><a href='{{ unsubscribe_url }}'>Leave</a>")
    campaign.servers.set([make_server(name="Sandbox", port=sandbox.port)])

    result = sender_client.post(reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "Ben@Example.test"})

    assert "A test message: its unsubscribe link leads to a page that says so" in result.content.decode()
    parsed = message_from_bytes(sandbox.received[0].data, policy=policy.default)
    assert parsed["Subject"] == "Hello Ben"
    link = parsed["List-Unsubscribe"].strip().removeprefix("<").removesuffix(">")
    assert f"href='{link}'" in parsed.get_body(("html",)).get_content()  # the body's link is the test's too
    for method in (client.get, client.post):  # a person, or a mailbox provider's one-click
        page = method(link.removeprefix(SITE)).content.decode()
        assert "This was a test message of the campaign “Spring news”." in page
        assert "In the real mailing this link unsubscribes the recipient. Nothing was changed." in page
    assert Subscriber.objects.get(email="ben@example.test").status == Subscriber.Status.ACTIVE
    assert not Suppression.objects.exists()


def test_test_send_shows_the_servers_refusal_escaped(sender_client, make_campaign, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(reject="refused@")
    campaign = make_campaign()
    campaign.servers.set([make_server(name="Sandbox", port=sandbox.port)])

    response = sender_client.post(
        reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "refused@example.test"}, **HTMX
    )

    content = response.content.decode()
    assert sandbox.received == []
    assert "✘ Not sent to refused@example.test (failed)" in content
    assert "550" in content and "5.1.1 &lt;refused@example.test&gt;: Recipient address rejected" in content
    assert "<refused@example.test>" not in content


def test_test_send_without_an_enabled_server_says_so(sender_client, campaign, server):
    server.enabled = False
    server.save()

    response = sender_client.post(
        reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "tester@example.test"}, **HTMX
    )

    assert "no enabled SMTP server" in response.content.decode()


@pytest.mark.parametrize("headers, status", [({}, 400), (HTMX, 200)], ids=["plain", "htmx"])
def test_test_send_to_a_bad_address_names_the_field(sender_client, campaign, headers, status):
    response = sender_client.post(
        reverse("campaigns:test_send", args=[campaign.pk]), {"to_email": "not an address"}, **headers
    )

    assert response.status_code == status
    assert "Send a test to: Enter a valid email address." in response.content.decode()


def test_test_send_refuses_get(sender_client, campaign):
    assert sender_client.get(reverse("campaigns:test_send", args=[campaign.pk])).status_code == 405


def test_delete_asks_first(sender_client, campaign):
    response = sender_client.get(reverse("campaigns:delete", args=[campaign.pk]))

    assert "Delete “Spring news”?" in response.content.decode()
    assert Campaign.objects.filter(pk=campaign.pk).exists()


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
@pytest.mark.parametrize("status", [Campaign.Status.DRAFT, Campaign.Status.FINISHED, Campaign.Status.CANCELLED])
def test_delete_removes_a_campaign_that_is_not_under_way(sender_client, make_campaign, status, headers):
    campaign = make_campaign(status=status)
    Delivery.objects.create(campaign=campaign, subscriber=Subscriber.objects.first(), status=Delivery.Status.SENT)

    response = sender_client.post(reverse("campaigns:delete", args=[campaign.pk]), **headers)

    if headers:
        assert response["HX-Redirect"] == reverse("campaigns:list")
    else:
        assert response.status_code == 302 and response.url == reverse("campaigns:list")
    assert not Campaign.objects.exists() and not Delivery.objects.exists()


@pytest.mark.parametrize("status", [Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.PAUSED])
def test_delete_is_refused_while_under_way(sender_client, make_campaign, status):
    campaign = make_campaign(status=status)

    response = sender_client.post(reverse("campaigns:delete", args=[campaign.pk]), follow=True)

    assert Campaign.objects.filter(pk=campaign.pk).exists()
    assert "cancel it to delete it" in response.content.decode()


def test_unknown_campaign_is_404(sender_client):
    for name in ("detail", "edit", "preview", "delete"):
        assert sender_client.get(reverse(f"campaigns:{name}", args=[999])).status_code == 404


@pytest.mark.parametrize(
    "overrides, label, message",
    [
        ({"html_body": '{{ "x"|ljust:"500000000" }}'}, "HTML body", "ljust: 500000000 is more than"),
        ({"text_body": "Hi\n{% debug %}"}, "Text body", "line 2: {% debug %} is not available in campaign templates"),
        (
            {"html_body": "{% for a in '0123456789' %}" * 4 + "{{ 'x'|ljust:'1000' }}" + "{% endfor %}" * 4},
            "HTML body",
            "The HTML body is larger than 1,048,576 bytes for the sample subscriber.",
        ),
        ({"subject": "{{ 'x'|ljust:'999' }}"}, "Subject", "The subject is larger than 998 bytes"),
        ({"subject": "Hi\u2028Bcc: evil@evil.test"}, "Subject", "line break or control character U+2028"),
        ({"from_email": "Evil\x0bBcc: evil@evil.test <news@example.test>"}, "From", "control character U+000B"),
        ({"from_email": "Evil\x85 <news@example.test>"}, "From", "control character U+0085"),
        ({"reply_to": "Help\u2029 <help@example.test>"}, "Reply-To", "control character U+2029"),
    ],
)
def test_abusable_templates_and_headers_are_form_errors(sender_client, news, server, overrides, label, message):
    response = sender_client.post(reverse("campaigns:create"), _form_data(news, server, **overrides), **HTMX)

    content = response.content.decode()
    assert response.status_code == 200
    assert f">{label}</a>: " in content and message in content
    assert Campaign.objects.count() == 0


def test_a_test_send_to_an_address_with_a_hidden_line_break_is_refused(sender_client, campaign):
    url = reverse("campaigns:test_send", args=[campaign.pk])
    response = sender_client.post(url, {"to_email": "me@exam\u2028ple.test"})

    assert response.status_code == 400
    assert "U+2028" in response.content.decode()


# -- previewing as a chosen subscriber, and before saving --


def test_preview_as_a_chosen_subscriber_of_its_lists(sender_client, make_campaign):
    campaign = make_campaign()
    url = reverse("campaigns:preview", args=[campaign.pk])

    content = sender_client.get(url, {"preview_as": " Ben@Example.test "}).content.decode()

    assert "As ben@example.test would receive it." in content and "Hello Ben" in content
    frame = reverse("campaigns:preview_html", args=[campaign.pk]) + "?preview_as=ben%40example.test"
    assert f'<iframe class="html-part" sandbox src="{frame}"' in content
    assert sender_client.get(frame).content.decode() == "<p>Hi Ben from Porto</p>"


def test_preview_as_someone_not_on_its_lists_says_so_and_shows_the_first_subscriber(sender_client, make_campaign):
    campaign = make_campaign()
    Subscriber.objects.create(email="elsewhere@example.test", name="Else")

    response = sender_client.get(
        reverse("campaigns:preview", args=[campaign.pk]), {"preview_as": "elsewhere@example.test"}
    )

    content = response.content.decode()
    assert response.status_code == 200
    assert "elsewhere@example.test is not a subscriber of the campaign&#x27;s lists." in content
    assert "the first active subscriber instead" in content and "Hello Ana" in content


def test_preview_as_a_bad_address_names_the_field(sender_client, make_campaign):
    campaign = make_campaign()

    response = sender_client.get(reverse("campaigns:preview", args=[campaign.pk]), {"preview_as": "<b>nope"})

    content = response.content.decode()
    assert response.status_code == 400
    assert "Preview as: Enter a valid email address." in content and "<b>nope" not in content
    assert "Hello Ana" in content  # the page still shows the message


def test_the_preview_pages_are_read_only(sender_client, make_campaign):
    campaign = make_campaign()
    for name in ("preview", "preview_html"):
        assert sender_client.post(reverse(f"campaigns:{name}", args=[campaign.pk])).status_code == 405


def test_the_form_previews_its_message_before_saving_with_htmx(sender_client, news, server):
    data = _form_data(news, server, html_body="<p>Hi {{ subscriber.name }}</p><script>x()</script>")

    response = sender_client.post(reverse("campaigns:preview_unsaved"), data, **HTMX)

    content = response.content.decode()
    assert response.status_code == 200 and content.startswith('<section id="unsaved-preview"')
    assert "News for Ana" in content and '<pre class="text-part">Hi Ana</pre>' in content
    assert "<script>" not in content
    frame = re.search(r'<iframe class="html-part" sandbox src="([^"]+)"', content).group(1).replace("&amp;", "&")
    assert frame.startswith(reverse("campaigns:preview_unsaved_html") + "?v=")
    shown = sender_client.get(frame)
    assert shown.content.decode() == "<p>Hi Ana</p><script>x()</script>"
    assert "sandbox" in shown["Content-Security-Policy"] and shown["X-Frame-Options"] == "SAMEORIGIN"
    assert not Campaign.objects.exists()


def test_the_form_previews_without_javascript_and_keeps_what_was_typed(sender_client, news, server):
    data = _form_data(news, server, name="Unsaved idea", preview_as="ben@example.test")

    response = sender_client.post(reverse("campaigns:preview_unsaved"), data)

    content = response.content.decode()
    assert response.status_code == 200 and "<h1>New campaign</h1>" in content
    assert 'value="Unsaved idea"' in content and 'value="ben@example.test"' in content
    assert "As ben@example.test would receive it." in content and "News for Ben" in content
    assert not Campaign.objects.exists()


def test_the_form_preview_names_what_keeps_it_from_rendering(sender_client, news, server):
    data = _form_data(news, server, subject="{% if %}", preview_as="not an address", lists=[])

    content = sender_client.post(reverse("campaigns:preview_unsaved"), data, **HTMX).content.decode()

    assert "The message cannot be previewed yet" in content
    assert "<li>Subject: Template error on line 1" in content
    assert "<li>Preview as: Enter a valid email address.</li>" in content
    assert "Lists" not in content  # not part of the message: no reason not to preview it


def test_the_form_preview_of_an_edit_is_of_the_edited_text(sender_client, campaign, news, server):
    data = _form_data(news, server, subject="Edited for {{ subscriber.name }}")
    edit_page = sender_client.get(reverse("campaigns:edit", args=[campaign.pk])).content.decode()

    content = sender_client.post(
        reverse("campaigns:preview_unsaved_edit", args=[campaign.pk]), data, **HTMX
    ).content.decode()

    assert f'formaction="{reverse("campaigns:preview_unsaved_edit", args=[campaign.pk])}"' in edit_page
    assert "Edited for Ana" in content
    campaign.refresh_from_db()
    assert campaign.subject == "Hello {{ subscriber.name }}"


def _unsaved_frame(browser, data: dict) -> str:
    content = browser.post(reverse("campaigns:preview_unsaved"), data, **HTMX).content.decode()
    return re.search(r'<iframe class="html-part" sandbox src="([^"]+)"', content).group(1).replace("&amp;", "&")


def _says_to_preview_again(response) -> bool:
    return response["Content-Type"].startswith("text/plain") and response.content.decode() == (
        "This preview was replaced by a later one, or is too old: press Preview again."
    )


def test_an_outdated_preview_frame_says_to_preview_again(sender_client, news, server):
    older = _unsaved_frame(sender_client, _form_data(news, server, html_body="<p>Older</p>"))
    latest = _unsaved_frame(sender_client, _form_data(news, server, html_body="<p>Latest</p>"))

    assert _says_to_preview_again(sender_client.get(older))
    assert _says_to_preview_again(sender_client.get(reverse("campaigns:preview_unsaved_html"), {"v": "made-up"}))
    assert sender_client.get(latest).content.decode() == "<p>Latest</p>"


def test_an_unsaved_preview_is_kept_out_of_the_session_in_the_shared_cache_for_a_while(
    sender_client, login_as, news, server, monkeypatch
):
    """The session is read on every request, polls included: a 1 MiB body does not belong
    there. The frame may be asked for from another process: the cache is one they share."""
    monkeypatch.setattr(preview, "PREVIEW_LIFETIME_S", 1)
    frame = _unsaved_frame(sender_client, _form_data(news, server, html_body="<p>Kept apart</p>"))

    assert "Kept apart" not in str(dict(sender_client.session))
    assert not isinstance(caches["shared"], LocMemCache)
    assert sender_client.get(frame).content.decode() == "<p>Kept apart</p>"
    assert _says_to_preview_again(login_as("sender").get(frame))  # another session cannot see it
    time.sleep(1.1)
    assert _says_to_preview_again(sender_client.get(frame))


def test_previewing_unsaved_is_a_post_for_senders(sender_client, viewer_client, news, server):
    assert sender_client.get(reverse("campaigns:preview_unsaved")).status_code == 405
    assert viewer_client.post(reverse("campaigns:preview_unsaved"), _form_data(news, server)).status_code == 403


def _unsubscribe_tokens(*contents: str) -> set[str]:
    """Every unsubscribe token in these pages, in a header shown or in a link of a part."""
    path = reverse("unsubscribe", args=["TOKEN"]).split("TOKEN")[0]
    return {token for content in contents for token in re.findall(rf"{re.escape(path)}([^/\"'<>\s]+)/", content)}


def test_no_preview_carries_a_token_that_unsubscribes_anyone(viewer_client, sender_client, client, make_campaign, news):
    """Whoever may look at a preview must not be able to unsubscribe the subscriber it is shown as."""
    body = "<p>Hi {{ subscriber.name }}</p><a href='{{ unsubscribe_url }}'>Leave</a>"
    campaign = make_campaign(html_body=body, text_body="Leave: {{ unsubscribe_url }}")
    saved = [reverse(f"campaigns:{name}", args=[campaign.pk]) for name in ("preview", "preview_html")]
    unsaved_urls = [reverse("campaigns:preview_unsaved"), reverse("campaigns:preview_unsaved_edit", args=[campaign.pk])]
    contents = []
    for email in ("", "ana@example.test", "ben@example.test"):
        query = {"preview_as": email} if email else {}
        contents += [viewer_client.get(url, query).content.decode() for url in saved]
        for url in unsaved_urls:
            data = _form_data(news, campaign.servers.get(), html_body=body, preview_as=email)
            unsaved = sender_client.post(url, data, **HTMX).content.decode()
            frame = re.search(r'<iframe class="html-part" sandbox src="([^"]+)"', unsaved).group(1)
            contents += [unsaved, sender_client.get(frame.replace("&amp;", "&")).content.decode()]

    tokens = _unsubscribe_tokens(*contents)

    assert len(tokens) == 2  # a test's: the campaign's (saved or edited) and the new one's, whoever it is shown as
    for token in tokens:
        with pytest.raises(BadSignature):
            read_unsubscribe_token(token)
        page = client.post(reverse("unsubscribe", args=[token])).content.decode()
        assert "Nothing was changed." in page
    assert "(a test link: it unsubscribes nobody)" in contents[0]
    assert not Subscriber.objects.exclude(status=Subscriber.Status.ACTIVE).exists()
    assert not Suppression.objects.exists()
