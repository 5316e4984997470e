"""Rendering a campaign for one subscriber: templates, text from HTML, headers, unsubscribe links."""

from email import message_from_bytes, policy

import pytest
from django.core.signing import BadSignature, Signer

from campaigns.models import Campaign, MailingList, Subscriber
from campaigns.rendering import (
    CampaignRenderer,
    RenderError,
    html_to_text,
    read_unsubscribe_token,
    sample_subscriber,
    template_error,
    unsubscribe_url,
)
from campaigns.templating import ENGINE, render

SITE = "https://mail.example.test"


@pytest.fixture(autouse=True)
def _site_url(settings):
    settings.SITE_URL = SITE


def _campaign(**overrides) -> Campaign:
    fields = {
        "pk": 7,
        "name": "Spring news",
        "subject": "News for {{ subscriber.name }}",
        "from_email": "Relaydeck News <news@example.test>",
        "html_body": "<p>Hello {{ subscriber.name }} in {{ subscriber.attributes.city }}</p>",
        "text_body": "",
    }
    return Campaign(**(fields | overrides))


def _subscriber(**overrides) -> Subscriber:
    fields = {"pk": 42, "email": "ana@example.test", "name": "Ana", "attributes": {"city": "Porto"}}
    return Subscriber(**(fields | overrides))


def _parsed(message):
    """What a server receives: the message as bytes, parsed back."""
    return message_from_bytes(message.message().as_bytes(), policy=policy.default)


def test_renders_subscriber_fields_and_attributes_in_subject_and_bodies():
    text = "Hi {{ subscriber.name }} <{{ subscriber.email }}>, {{ subscriber.attributes.city }}. {{ campaign.name }}"
    campaign = _campaign(text_body=text)
    message = CampaignRenderer(campaign).message(_subscriber(), "<m1@example.test>")

    assert message.subject == "News for Ana"
    assert message.body == "Hi Ana <ana@example.test>, Porto. Spring news"
    assert message.alternatives[0] == ("<p>Hello Ana in Porto</p>", "text/html")
    assert message.to == ["ana@example.test"]
    assert message.from_email == "Relaydeck News <news@example.test>"


def test_html_is_autoescaped_but_subject_and_text_are_not():
    campaign = _campaign(text_body="Hi {{ subscriber.name }}")
    message = CampaignRenderer(campaign).message(_subscriber(name="<b>x</b> & co"), "<m1@example.test>")

    assert message.alternatives[0][0] == "<p>Hello &lt;b&gt;x&lt;/b&gt; &amp; co in Porto</p>"
    assert message.body == "Hi <b>x</b> & co"
    assert message.subject == "News for <b>x</b> & co"


def test_text_part_is_made_from_the_html_when_left_blank():
    campaign = _campaign(
        html_body='<h1>Hi {{ subscriber.name }}</h1><p>Read <a href="https://example.test/a?x=1&amp;y=2">this</a>.</p>'
    )
    message = CampaignRenderer(campaign).message(_subscriber(name="<b>x</b>"), "<m1@example.test>")

    assert message.body == "Hi <b>x</b>\n\nRead this (https://example.test/a?x=1&y=2)."


NEWSLETTER = """<html><head><title>News</title><style>p { color: red }</style></head><body>
<h1>Hello {{ subscriber.name }}!</h1>
<p>News from {{ subscriber.attributes.city|default:"your town" }} &amp; more&nbsp;news.</p>
<ul>
  {% for tag in subscriber.attributes.tags %}
  <li>{{ tag }}</li>
  {% endfor %}
</ul>
{% if subscriber.attributes.vip %}<p>You are a <b>VIP</b>.</p>{% endif %}
<p>Visit <a href="https://example.test/?a=1&amp;b=2">our site</a>.<br>
   <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
<script>alert(1)</script>
</body></html>"""


@pytest.mark.parametrize(
    "html",
    [
        NEWSLETTER,
        "<table><tr><td>{{ subscriber.name }}</td><td>{{ subscriber.email }}</td></tr></table>",
        "{% if subscriber.name %}<p>Dear {{ subscriber.name }},</p>{% else %}<p>Hello,</p>{% endif %}<p>Bye</p>",
        "<div>{% for tag in subscriber.attributes.tags %}{{ tag }}<br>{% endfor %}</div><p>{# a note #}End</p>",
        "<pre>  {{ subscriber.name }}\n  two</pre>{% verbatim %}<p>{{ literally }}</p>{% endverbatim %}",
    ],
)
@pytest.mark.parametrize(
    "subscriber",
    [
        _subscriber(name="<i>Zé</i> & Co", attributes={"city": "Porto", "tags": ["a", "b<c"], "vip": True}),
        _subscriber(name="", attributes={}),
    ],
    ids=["full", "bare"],
)
def test_text_made_once_from_the_html_template_reads_like_each_rendered_html_converted(html, subscriber):
    renderer = CampaignRenderer(_campaign(html_body=html))
    message = renderer.message(subscriber, "<m1@example.test>")

    assert renderer.text is not None, "converted once, not per message"
    assert message.body == html_to_text(message.alternatives[0][0])


def test_html_whose_tags_hide_in_comments_is_converted_per_message():
    html = "<!-- {% if subscriber.name %} -->Hi {{ subscriber.name }}<!-- {% endif %} --><p>Bye</p>"
    renderer = CampaignRenderer(_campaign(html_body=html))

    assert renderer.text is None
    assert renderer.message(_subscriber(), "<m1@example.test>").body == "Hi Ana\n\nBye"


def test_every_message_carries_its_message_id_and_one_click_unsubscribe():
    campaign = _campaign(reply_to="help@example.test")
    parsed = _parsed(CampaignRenderer(campaign).message(_subscriber(), "<relaydeck.7.1@example.test>"))

    assert parsed["Message-ID"] == "<relaydeck.7.1@example.test>"
    assert parsed["List-Unsubscribe"].strip() == f"<{unsubscribe_url(42, 7)}>"  # folded: long
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Reply-To"] == "help@example.test"
    assert parsed["To"] == "ana@example.test"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_the_unsubscribe_link_is_in_the_template_context():
    campaign = _campaign(html_body='<a href="{{ unsubscribe_url }}">Unsubscribe</a>')
    message = CampaignRenderer(campaign).message(_subscriber(), "<m1@example.test>")

    assert f'href="{unsubscribe_url(42, 7)}"' in message.alternatives[0][0]
    assert message.body == f"Unsubscribe ({unsubscribe_url(42, 7)})"


def test_a_text_only_campaign_has_no_html_part():
    campaign = _campaign(html_body="", text_body="Hi {{ subscriber.name }}")
    message = CampaignRenderer(campaign).message(_subscriber(), "<m1@example.test>")
    parsed = _parsed(message)

    assert message.alternatives == []
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().strip() == "Hi Ana"
    assert "Reply-To" not in parsed


def test_the_subject_stays_on_one_line():
    campaign = _campaign(subject="For {{ subscriber.attributes.city }}")
    message = CampaignRenderer(campaign).message(_subscriber(attributes={"city": "Porto\r\nBcc: x@evil.test"}), "<m>")

    assert message.subject == "For Porto Bcc: x@evil.test"


def test_a_template_failing_on_one_subscribers_data_raises_render_error_naming_the_line():
    campaign = _campaign(html_body="<p>Hi</p>\n{{ subscriber.attributes.count|divisibleby:0 }}")
    renderer = CampaignRenderer(campaign)

    with pytest.raises(RenderError, match=r"^line 2: "):
        renderer.message(_subscriber(attributes={"count": 4}), "<m1@example.test>")


def test_unsubscribe_url_is_absolute_and_its_token_round_trips():
    url = unsubscribe_url(42, 7)
    token = url.removeprefix(f"{SITE}/u/").removesuffix("/")

    assert url.startswith(f"{SITE}/u/") and url.endswith("/")
    assert read_unsubscribe_token(token) == (42, 7)
    token_without_campaign = unsubscribe_url(42, None).removeprefix(f"{SITE}/u/").removesuffix("/")
    assert read_unsubscribe_token(token_without_campaign) == (42, None)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token.replace("42.", "43.", 1),  # another subscriber
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # another signature
        lambda token: token.split(":")[0],  # no signature
        lambda token: Signer(salt="another.purpose").sign("42.7"),  # signed for something else
        lambda token: "garbage",
    ],
    ids=["subscriber", "signature", "unsigned", "other-salt", "garbage"],
)
def test_a_tampered_unsubscribe_token_is_rejected(tamper):
    token = unsubscribe_url(42, 7).removeprefix(f"{SITE}/u/").removesuffix("/")

    with pytest.raises(BadSignature):
        read_unsubscribe_token(tamper(token))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("Hi\n{% for x in subscriber.attributes.tags %}\n{{ x }}\n{% endif %}", "line 4: Invalid block tag: 'endif'"),
        ("Hi\n\n{% for x in subscriber.attributes.tags %}{{ x }}", "line 3: Unclosed tag"),
        ("Hi {{ subscriber.name|shout }}", "line 1: Invalid filter: 'shout'"),
        ("{% load humanize %}", "line 1: {% load %} is not available in campaign templates"),
        ("One\n{% include 'base.html' %}", "line 2: {% include %} is not available in campaign templates"),
        ("One\n{% url 'nowhere' %}", "line 2: {% url %} is not available in campaign templates"),
        ("{{ subscriber.name", None),  # not a tag at all: shown as typed
        ("{{ subscriber.attributes.visits|divisibleby:10 }}", None),  # fails on the sample's blank data only
        ("Hi {{ subscriber.name }}, {{ unknown.variable }}", None),
    ],
)
def test_template_error_reports_what_is_wrong_and_on_which_line(source, expected):
    error = template_error(source, "text_body")

    if expected is None:
        assert error is None
    else:
        assert error.startswith(f"Template error on {expected}"), error


@pytest.mark.parametrize(
    "html, text",
    [
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("Line one<br>Line two<br/>Line three", "Line one\nLine two\nLine three"),
        ("<h1>Title</h1>Body", "Title\n\nBody"),
        ("<ul>\n  <li>a</li>\n  <li>b</li>\n</ul>", "- a\n- b"),
        ('<a href="https://example.test/x">Read more</a>', "Read more (https://example.test/x)"),
        ('<a href="https://example.test/x">https://example.test/x</a>', "https://example.test/x"),
        ('<a href="mailto:a@example.test">a@example.test</a>', "a@example.test"),
        ('<a href="#top">Top</a>', "Top"),
        ('<a href="https://example.test/"><img src="logo.png" alt="Logo"></a>', "Logo (https://example.test/)"),
        ("<style>p { color: red }</style><script>alert('x')</script><p>Shown</p>", "Shown"),
        ("<head><title>Hidden</title></head><body>Shown</body>", "Shown"),
        ("<p>Fish &amp; chips &lt;3 &eacute;&#233;&nbsp;!</p>", "Fish & chips <3 éé !"),
        ("<p>  lots   of\n\n   space  </p>\n\n\n<p>x</p>", "lots of space\n\nx"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
    ],
)
def test_html_to_text(html, text):
    assert html_to_text(html) == text


@pytest.mark.django_db
def test_sample_subscriber_is_the_first_active_subscriber_of_the_campaigns_lists():
    news, other = MailingList.objects.create(name="News"), MailingList.objects.create(name="Other")
    campaign = Campaign.objects.create(name="c", subject="s", from_email="a@example.test", html_body="x")
    campaign.lists.add(news)
    Subscriber.objects.create(email="gone@example.test", status=Subscriber.Status.UNSUBSCRIBED).lists.add(news)
    Subscriber.objects.create(email="elsewhere@example.test").lists.add(other)
    first = Subscriber.objects.create(email="zoe@example.test", name="Zoe")
    first.lists.add(news)
    Subscriber.objects.create(email="yan@example.test").lists.add(news)

    assert sample_subscriber(campaign) == first


@pytest.mark.django_db
def test_sample_subscriber_is_an_unsaved_example_when_the_lists_are_empty():
    campaign = Campaign.objects.create(name="c", subject="s", from_email="a@example.test", html_body="x")

    sample = sample_subscriber(campaign)

    assert sample.pk is None
    assert (sample.email, sample.name) == ("jane@example.test", "Jane Example")
    city = ENGINE.from_string("{{ subscriber.attributes.city }}")
    assert render(city, {"subscriber": sample}, autoescape=True, max_bytes=100) == "Lisbon"
