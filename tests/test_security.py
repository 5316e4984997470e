"""Security headers: a Content-Security-Policy that allows only this origin, and pages that need
nothing more (no inline script or style, no eval), every one of them."""

import json
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse
from django.utils import timezone

from campaigns.demo import create_demo
from campaigns.models import Delivery, Event, SubscriberImport
from campaigns.rendering import unsubscribe_url
from smtp_settings.events import Kind
from smtp_settings.models import ApiToken, Bounce, BounceMailbox, OutboxMessage, RelayCredential, Suppression

pytestmark = pytest.mark.django_db

POLICY = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"


def _directives(header: str) -> set[str]:
    return {directive.strip() for directive in header.split(";")}


class InlineCode(HTMLParser):
    """Whatever the policy blocks: scripts without src, style elements and attributes, event
    handler attributes, javascript: links, and htmx attributes that need eval."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script" and "src" not in dict(attrs):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            value = (value or "").strip()
            if name == "style" or name.startswith(("on", "hx-on", "data-hx-on")):
                self.found.append(f"<{tag} {name}=…>")
            elif value.lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")
            elif name in ("hx-trigger", "hx-vals", "hx-vars") and ("[" in value or value.startswith("js:")):
                self.found.append(f"<{tag} {name}={value!r}> (needs eval)")

    handle_startendtag = handle_starttag


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


@pytest.fixture
def data(make_server, tmp_path, settings):
    """One of everything a page shows: a campaign with sent mail and events (for the chart),
    its list and subscribers, an import with a rejected row, a server, a message in the
    sandbox inbox (its HTML with inline code, which only its frame may hold)."""
    campaign = create_demo(subscribers=3).campaign
    subscriber = campaign.lists.get().subscribers.first()
    now = timezone.now()
    Delivery.objects.create(campaign=campaign, subscriber=subscriber, status="sent", sent_at=now)
    Event.objects.bulk_create(
        Event(at=now - timedelta(seconds=s), last_at=now, kind=kind, campaign_id=campaign.pk, server_name="ses")
        for s, kind in [(90, Kind.CONNECT), (60, Kind.SESSION_CLOSED_421), (30, Kind.RECONNECT)]
    )
    message = OutboxMessage.objects.create(
        source="api",
        recipients=["to@example.test"],
        data=b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
        size=43,
        status="deferred",
        updated_at=now,
        last_reply="<b>busy</b>",
    )
    credential = RelayCredential(name="app", username="app")
    credential.set_password("a-long-password")
    credential.save()
    settings.SANDBOX_INBOX_DIR = tmp_path
    inboxed = "00000000000000000001.P1Q1.relaydeck"
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / inboxed).write_bytes(
        b"Subject: hi\r\nContent-Type: text/html\r\n\r\n<p style='color:red' onclick='x()'>hi</p>\r\n"
    )
    rejected = [{"line": 2, "reason": "not an email address"}]
    job = SubscriberImport.objects.create(
        mailing_list=campaign.lists.get(), file="imports/x.csv", original_name="x.csv", status="done", errors=rejected
    )
    return {
        "campaigns": {"pk": campaign.pk},
        "lists": {"pk": campaign.lists.get().pk, "import_pk": job.pk, "subscriber_pk": subscriber.pk},
        "logs": {"pk": campaign.pk},
        "smtp_settings": {"pk": campaign.servers.get().pk},
        "outbox": {"pk": message.pk},
        "access": {"pk": credential.pk, "token_pk": ApiToken.issue("app")[0].pk},
        "bounce_mailboxes": {"pk": BounceMailbox.objects.create(name="bounces", host="127.0.0.1", port=993).pk},
        "api": {"pk": message.pk},
        "suppressions": {"pk": Suppression.objects.create(email="gone@example.test", reason="hard_bounce").pk},
        "bounces": {"pk": Bounce.objects.create(kind="unparsed", source="listener", report=b"<script>x</script>").pk},
        "": {"token": unsubscribe_url(subscriber.pk, campaign.pk).rsplit("/", 2)[-2]},
        "sandbox_inbox": {"name": inboxed},
    }


def _pages(data) -> dict[str, str]:
    """Every named URL of the dashboard (the admin is Django's own), with real objects in it."""
    pages = {}
    for entry in get_resolver().url_patterns:
        namespace, patterns = (entry.namespace, entry.url_patterns) if isinstance(entry, URLResolver) else ("", [entry])
        if namespace == "admin":
            continue
        for pattern in patterns:
            name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            kwargs = {key: data[namespace][key] for key in pattern.pattern.converters}
            pages[name] = reverse(name, kwargs=kwargs)
    return pages


MESSAGE_FRAMES = ("campaigns:preview_html", "sandbox_inbox:html")


def test_every_page_carries_the_policy_and_needs_nothing_inline(admin_client, data):
    checked = set()
    for name, url in _pages(data).items():
        response = admin_client.get(url)
        # A redirect (home, edits of a sent campaign), POST only, or the API and the ESPs'
        # webhooks, which want a token or a secret.
        if response.status_code in (302, 405) or name.startswith(("api:", "webhooks:")):
            continue
        assert response.status_code == 200, (name, response.status_code)
        # A message's HTML part, as sent, under a policy of its own (tested with its page).
        if "text/html" not in response.headers["Content-Type"] or name in MESSAGE_FRAMES:
            continue
        assert _directives(response.headers["Content-Security-Policy"]) == _directives(POLICY), name
        assert inline_code(response.content.decode()) == [], name
        checked.add(name)
        if name == "campaigns:detail":
            assert 'class="sending-chart"' in response.content.decode()  # the SVG chart is checked too

    # The walk reached the pages, not just their error pages.
    assert {"campaigns:detail", "campaigns:preview", "lists:detail", "lists:import_status", "logs:campaign"} <= checked
    assert {"logs:list", "smtp_settings:edit", "unsubscribe", "suppressions:list", "suppressions:remove"} <= checked
    assert {"outbox:list", "outbox:detail", "outbox:chart", "access:index", "access:credential_edit"} <= checked
    assert {"bounces:list", "bounces:detail", "sandbox_inbox:list", "sandbox_inbox:detail"} <= checked
    assert {"bounce_mailboxes:list", "bounce_mailboxes:edit", "bounce_mailboxes:delete"} <= checked


def test_the_login_page_and_the_admin_carry_the_policy_too(client, admin_client):
    for response in (client.get(reverse("login")), admin_client.get(reverse("admin:index"))):
        assert _directives(response.headers["Content-Security-Policy"]) == _directives(POLICY)
        assert inline_code(response.content.decode()) == []


def test_htmx_is_told_to_inject_no_style_settle_no_style_and_eval_nothing(admin_client):
    html = admin_client.get(reverse("campaigns:list")).content.decode()

    config = json.loads(re.search(r"""<meta name="htmx-config" content='([^']*)'>""", html)[1])
    assert config["includeIndicatorStyles"] is False
    assert config["allowEval"] is False
    # htmx's default settles "style" too: an element's style attribute, set by anything (the
    # browser suite's screenshots leave style="" on inputs), copied onto the element a swap
    # brings, is an inline style the policy refuses (tests/e2e fail on such console errors).
    assert "style" not in config["attributesToSettle"]
    assert {"class", "width", "height"} <= set(config["attributesToSettle"])
    assert "{#" not in html and "#}" not in html  # its comment is one, not page text


def test_the_policy_finds_inline_code():
    found = inline_code(
        '<script>alert(1)</script><style>p{}</style><p style="color:red" onclick="x()">'
        '<a href="javascript:x()">x</a><input hx-trigger="every 2s [this.checked]">'
        '<script src="/static/app.js"></script>'
    )

    assert len(found) == 6


def test_the_preview_frames_the_message_under_a_policy_of_its_own(admin_client, data):
    campaign_pk = data["campaigns"]["pk"]
    page = admin_client.get(reverse("campaigns:preview", args=[campaign_pk])).content.decode()
    frame = reverse("campaigns:preview_html", args=[campaign_pk])
    assert f'<iframe class="html-part" sandbox src="{frame}"' in page

    response = admin_client.get(frame)

    # The message's own styles and images show, as in a mail client; nothing in it runs, even
    # opened outside the frame, and only this site may frame it.
    assert "<h1>Hello Reader 1</h1>" in response.content.decode()
    assert _directives(response.headers["Content-Security-Policy"]) == {
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src https: data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "sandbox",
    }
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_the_message_frame_needs_a_login(data):
    response = Client().get(reverse("campaigns:preview_html", args=[data["campaigns"]["pk"]]))

    assert response.status_code == 302 and response.headers["Location"].startswith(reverse("login"))
