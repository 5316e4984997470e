"""The bounces page and a bounce's page: who sees what, filters, and reports written by
anyone, shown escaped and bounded; the event log's link from a bounce's event to its page."""

import pytest
from django.urls import reverse

from campaigns import eventlog
from project.roles import Role
from smtp_settings.bounces import intake
from smtp_settings.bounces.record import record
from smtp_settings.bounces.views import SHOWN_BYTES
from tests.smtp_settings.bounces.test_reports import CORPUS, dsn_naming, sent_to
from tests.smtp_settings.test_outbox_views import make_message

pytestmark = pytest.mark.django_db

LIST = reverse("bounces:list")
HOSTILE = (
    b"From: <script>alert('from')</script>@evil.example\r\n"
    b"Subject: \x1b[31mred\x1b[0m \xff\xfe not UTF-8, \xe2\x80\xae reversed\r\n\r\n"
    b"</pre><img src=x onerror=alert(1)>\x00\x07\r\n"
)


def detail(pk: int) -> str:
    return reverse("bounces:detail", args=[pk])


def listed(response) -> list[int]:
    return [bounce.pk for bounce in response.context["page"].rows]


@pytest.fixture
def one_of_each():
    """A bounce of each kind, from each source, oldest first; the last one's report is not understood."""
    return [
        record("hard", "send", "gone@example.test", reference="d1", code=550, status="5.1.1", text="user unknown"),
        record("soft", "listener", "full@example.test", reference="o2", status="5.2.2", text="mailbox full"),
        record("complaint", "webhook", "angry@example.test", text="Feedback-Type: abuse"),
        record("delayed", "mailbox", "slow@example.test", status="4.4.1"),
        *intake.read((CORPUS / "dumbass_01.txt").read_bytes(), ["bounces+x@b.example.test"]).record("listener"),
    ]


# -- who may see what --


def test_the_pages_need_a_login(client, one_of_each):
    pk = one_of_each[0].pk
    for url in (LIST, detail(pk), reverse("bounces:report", args=[pk])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SENDER])
def test_below_admin_a_bounce_shows_what_it_says_but_not_its_raw_report(login_as, role):
    [bounce] = intake.read(HOSTILE + b"Final-Recipient: rfc822; secret-third-party@example.net\r\n").record("listener")
    browser = login_as(role)

    page = browser.get(detail(bounce.pk)).content.decode()

    assert "Only admins see a report" in page
    assert "secret-third-party" not in page and "alert" not in page
    assert browser.get(reverse("bounces:report", args=[bounce.pk])).status_code == 403


def test_the_pages_are_read_with_get_only(login_as, one_of_each):
    admin = login_as(Role.ADMIN)
    pk = one_of_each[0].pk
    for url in (LIST, detail(pk), reverse("bounces:report", args=[pk])):
        assert admin.post(url).status_code == 405, url


# -- the list --


def test_the_list_shows_every_bounce_newest_first_with_its_delivery(viewer_client, one_of_each):
    response = viewer_client.get(LIST)
    page = response.content.decode()

    assert listed(response) == [bounce.pk for bounce in reversed(one_of_each)]
    assert f'href="{reverse("outbox:detail", args=[2])}"' in page  # "o2": an outbox message
    assert '<code class="reference">d1</code>' in page  # a campaign's: shown, campaigns link it
    assert "user unknown" in page and "mailbox full" in page
    for bounce in one_of_each:
        assert f'href="{detail(bounce.pk)}"' in page
    assert '<a href="/bounces/"' in page  # the navigation


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"kind": "unparsed"}, [4]),
        ({"kind": "hard"}, [0]),
        ({"source": "listener"}, [4, 1]),
        ({"email": "FULL@"}, [1]),
        ({"kind": "soft", "source": "send"}, []),
    ],
)
def test_filters_by_kind_source_and_part_of_the_address(viewer_client, one_of_each, query, expected):
    response = viewer_client.get(LIST, query)
    assert listed(response) == [one_of_each[n].pk for n in expected]
    if not expected:
        assert "No bounce matches these filters." in response.content.decode()


def test_a_filter_it_does_not_know_gets_400(viewer_client):
    response = viewer_client.get(LIST, {"kind": "<script>", "source": "nowhere"})
    assert response.status_code == 400
    assert "&lt;script&gt;" in response.content.decode() and "<script>" not in response.content.decode()


def test_older_bounces_are_a_page_away(viewer_client, settings):
    for n in range(51):
        record("hard", "send", f"r{n}@example.test")
    first = viewer_client.get(LIST)
    older = viewer_client.get(LIST, {"before": first.context["page"].older})
    assert len(listed(first)) == 50 and len(listed(older)) == 1


# -- a bounce's page --


def test_an_admin_sees_the_raw_report_escaped_with_control_characters_written_out(login_as):
    [bounce] = intake.read(HOSTILE, ["bounces+x@b.example.test"]).record("listener")
    page = login_as(Role.ADMIN).get(detail(bounce.pk)).content.decode()

    assert "&lt;script&gt;alert(&#x27;from&#x27;)&lt;/script&gt;" in page
    assert "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "\\u001b[31mred\\u001b[0m \ufffd\ufffd not UTF-8, \\u202e reversed" in page
    assert "\\u0000\\u0007" in page
    assert "<script>" not in page and "<img" not in page
    assert not any(character in page for character in "\x00\x07\x1b\u202e")


def test_a_report_is_downloaded_as_it_was_kept_by_an_admin_only(login_as):
    [bounce] = intake.read(HOSTILE).record("listener")
    response = login_as(Role.ADMIN).get(reverse("bounces:report", args=[bounce.pk]))
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == f'attachment; filename="bounce-{bounce.pk}.eml"'
    assert response.content == HOSTILE


def test_only_the_beginning_of_a_large_report_is_shown(login_as, settings):
    settings.BOUNCE_REPORT_MAX_BYTES = SHOWN_BYTES + 1000
    report = b"Subject: big\r\n\r\n" + b"a" * SHOWN_BYTES + b"THE END"
    [bounce] = intake.read(report + b"b" * 5000).record("listener")

    page = login_as(Role.ADMIN).get(detail(bounce.pk)).content.decode()

    assert "Only the first 256.0\xa0KB are shown." in page
    assert "THE END" not in page and "a" * 1000 in page
    assert "the rest was not kept" in page


def test_a_report_naming_several_recipients_is_kept_once_and_linked_from_each_bounce(login_as):
    reference = sent_to("a@example.net", "b@example.net")
    first, second = intake.read(dsn_naming("a@example.net", "b@example.net", reference=reference)).record("listener")
    admin = login_as(Role.ADMIN)

    page = admin.get(detail(second.pk)).content.decode()

    assert f'it is kept with <a href="{detail(first.pk)}">bounce {first.pk}</a>' in page
    assert "Download the report" not in page and "Report size" not in page
    assert "Download the report" in admin.get(detail(first.pk)).content.decode()


def test_a_report_not_acted_on_says_so_on_the_list_and_its_page(viewer_client):
    reference = sent_to("me@example.net")
    [bounce] = intake.read(dsn_naming("victim@example.net", reference=reference)).record("listener")
    said = "It names victim@example.net, which its delivery did not go to: kept, not acted on."

    listing = viewer_client.get(LIST).content.decode()
    page = viewer_client.get(detail(bounce.pk)).content.decode()

    for shown in (listing, page):
        assert '<span class="badge off">Not acted on</span>' in shown and said in shown
    assert "Not understood" not in page


def test_a_bounce_about_an_outbox_message_links_to_it(viewer_client):
    message = make_message()
    bounce = record("hard", "listener", "bob@example.test", reference=f"o{message.pk}")
    page = viewer_client.get(detail(bounce.pk)).content.decode()
    assert f'href="{reverse("outbox:detail", args=[message.pk])}">outbox #{message.pk}</a>' in page


def test_an_unknown_bounce_is_404(viewer_client):
    assert viewer_client.get(detail(999)).status_code == 404


# -- the event log --


def test_a_bounces_event_in_the_log_is_one_click_from_its_report(viewer_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        bounce = record("hard", "listener", "gone@example.test", status="5.1.1", text="user unknown")
    eventlog.flush()
    page = viewer_client.get(reverse("logs:list")).content.decode()
    assert f'<a class="bounce-link" href="{detail(bounce.pk)}">Bounce {bounce.pk}</a>' in page
