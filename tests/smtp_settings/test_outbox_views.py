"""The outbox page: messages with their last reply, filters, live counts and the chart, one
message's page, and requeue and delete, one at a time or by filter. A message being sent is
never requeued nor deleted; whatever a server said is shown as text."""

import re
from datetime import timedelta

import pytest
from django.core.mail import EmailMultiAlternatives
from django.urls import reverse
from django.utils import timezone

from project.roles import Role
from smtp_settings.mime import message_bytes
from smtp_settings.models import OutboxMessage
from smtp_settings.outbox import queue

pytestmark = pytest.mark.django_db

LIST = reverse("outbox:list")
HTMX = {"HTTP_HX_REQUEST": "true"}
Status = OutboxMessage.Status


def make_message(to="bob@example.test", subject="Hello", status=Status.QUEUED, html=None, **fields) -> OutboxMessage:
    """A message as a door would hand it over (queue.enqueue), then as delivery left it."""
    email = EmailMultiAlternatives(subject, "Hi Bob,\nyour order <ships> today.", "shop@example.test", [to])
    if html:
        email.attach_alternative(html, "text/html")
    data = message_bytes(email.message())
    [message] = queue.enqueue([queue.Envelope("shop@example.test", [to], data, source="relay", submitted_by="shop")])
    OutboxMessage.objects.filter(pk=message.pk).update(status=status, **fields)
    return OutboxMessage.objects.get(pk=message.pk)


def statuses() -> dict[int, tuple[str, int]]:
    rows = OutboxMessage.objects.values_list("pk", "status", "attempts")
    return {pk: (status, attempts) for pk, status, attempts in rows}


def listed(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="message-(\d+)"', response.content.decode())]


@pytest.fixture
def one_of_each():
    """A message in every status, the failed and deferred ones tried before."""
    return {
        status: make_message(to=f"{status}@example.test", status=status, attempts=3 if status in REQUEUABLE else 0)
        for status in Status.values
    }


REQUEUABLE = (Status.DEFERRED, Status.FAILED, Status.SKIPPED)


# -- who may see and do what --


def test_every_outbox_page_and_action_needs_a_login(client, one_of_each):
    pk = one_of_each[Status.FAILED].pk
    for url in (LIST, reverse("outbox:counts"), reverse("outbox:chart"), reverse("outbox:detail", args=[pk])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    for name, args in (("requeue", [pk]), ("delete", [pk]), ("requeue_filtered", []), ("delete_filtered", [])):
        response = client.post(reverse(f"outbox:{name}", args=args), {"confirm": "yes"})
        assert response.status_code == 302 and response.url.startswith(reverse("login")), name
    assert OutboxMessage.objects.get(pk=pk).status == Status.FAILED


def test_a_viewer_sees_the_outbox_but_may_not_requeue_or_delete(login_as, one_of_each):
    viewer = login_as(Role.VIEWER)
    failed = one_of_each[Status.FAILED]
    before = statuses()

    page = viewer.get(LIST).content.decode()

    assert "failed@example.test" in page and ">Requeue</button>" not in page and ">Delete</button>" not in page
    for url in (
        reverse("outbox:requeue", args=[failed.pk]),
        reverse("outbox:delete", args=[failed.pk]),
        reverse("outbox:requeue_filtered"),
        reverse("outbox:delete_filtered"),
    ):
        response = viewer.post(url, {"confirm": "yes"})
        assert response.status_code == 403
        assert "This needs the sender role" in response.content.decode()
    assert statuses() == before


@pytest.mark.parametrize("name", ["requeue", "delete", "requeue_filtered", "delete_filtered"])
def test_actions_refuse_get(sender_client, one_of_each, name):
    args = [one_of_each[Status.FAILED].pk] if name in ("requeue", "delete") else []
    before = statuses()
    assert sender_client.get(reverse(f"outbox:{name}", args=args)).status_code == 405
    assert statuses() == before


# -- the list --


def test_the_list_shows_messages_newest_first_with_what_the_server_said(viewer_client, make_server):
    server = make_server(name="SES")
    older = make_message(to="old@example.test", subject="Older")
    newer = make_message(
        to="new@example.test",
        subject="Your receipt",
        status=Status.DEFERRED,
        server=server,
        attempts=2,
        last_code=451,
        last_reply="4.7.1 Greylisted, try again later",
    )

    response = viewer_client.get(LIST)
    page = response.content.decode()

    assert listed(response) == [newer.pk, older.pk]
    row = re.search(rf'<tr id="message-{newer.pk}".*?</tr>', page, re.S).group(0)
    for shown in ("Deferred", "shop@example.test", "new@example.test", "Your receipt", "SES", ">2<"):
        assert shown in row, shown
    assert "451 4.7.1 Greylisted, try again later" in row


def test_a_servers_reply_is_shown_as_text_never_as_html(viewer_client):
    message = make_message(status=Status.FAILED, last_code=550, last_reply='<script>alert(1)</script><img src="x">')
    for url in (LIST, reverse("outbox:detail", args=[message.pk])):
        page = viewer_client.get(url).content.decode()
        assert "<script>alert(1)" not in page and '<img src="x">' not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=&quot;x&quot;&gt;" in page


def test_a_long_reply_is_cut_in_the_list(viewer_client):
    make_message(status=Status.FAILED, last_reply="x" * 5000)
    page = viewer_client.get(LIST).content.decode()
    assert "x" * 299 in page and "x" * 300 not in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failed"}, ["failed"]),
        ({"status": "skipped"}, ["skipped"]),
        ({"to": "DEFERRED@example"}, ["deferred"]),
        ({"to": "@example.test", "status": "sent"}, ["sent"]),
    ],
)
def test_filters_by_status_and_recipient(viewer_client, one_of_each, query, expected):
    response = viewer_client.get(LIST, query)
    assert listed(response) == [one_of_each[status].pk for status in expected]


def test_a_skipped_message_says_why_and_the_status_filter_offers_skipped(viewer_client):
    reply = "not sent: every recipient is on the suppression list (bob@example.test)"
    skipped = make_message(status=Status.SKIPPED, last_reply=reply)

    page = viewer_client.get(LIST, {"status": "skipped"}).content.decode()

    assert '<option value="skipped" selected>Skipped</option>' in page
    row = re.search(rf'<tr id="message-{skipped.pk}".*?</tr>', page, re.S).group(0)
    assert '<span class="badge outbox-skipped">Skipped</span>' in row and reply in row


def test_filters_by_server_and_time(viewer_client, make_server):
    ses, exchange = make_server(name="SES"), make_server(name="Exchange")
    now = timezone.now()
    early = make_message(server=ses, created_at=now - timedelta(hours=3))
    late = make_message(server=ses, created_at=now - timedelta(minutes=5))
    make_message(server=exchange, created_at=now - timedelta(minutes=5))
    since = timezone.localtime(now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")

    assert listed(viewer_client.get(LIST, {"server": ses.pk})) == [late.pk, early.pk]
    assert listed(viewer_client.get(LIST, {"server": ses.pk, "since": since})) == [late.pk]
    assert listed(viewer_client.get(LIST, {"server": ses.pk, "until": since})) == [early.pk]


def test_a_filter_that_cannot_be_used_is_a_400_naming_it(viewer_client):
    response = viewer_client.get(LIST, {"status": "lost", "since": "2026-05-04T10:00", "until": "2026-05-04T09:00"})
    page = response.content.decode()
    assert response.status_code == 400
    assert "Status</a>: Select a valid choice." in page and "Until</a>: Must be after “From”." in page


def test_the_list_is_paged_newest_first(viewer_client):
    made = [make_message(to=f"user{n}@example.test").pk for n in range(55)]

    first = viewer_client.get(LIST, {"status": "queued"})
    older = re.search(r'href="([^"]*before=\d+)">Older', first.content.decode()).group(1).replace("&amp;", "&")
    second = viewer_client.get(older)

    assert listed(first) == made[::-1][:50]
    assert listed(second) == made[::-1][50:]
    assert "status=queued" in older and "Older" not in second.content.decode()


# -- live counts and the chart --


def test_the_counts_per_status_refresh_alone_every_two_seconds(viewer_client, one_of_each):
    make_message(status=Status.FAILED)

    response = viewer_client.get(reverse("outbox:counts"), **HTMX)
    partial = response.content.decode()

    assert response.status_code == 200 and "<html" not in partial
    assert 'id="outbox-counts"' in partial and 'hx-trigger="every 2s"' in partial
    counts = dict(re.findall(r'\?status=(\w+)">\w+</a></dt><dd>(\d+)</dd>', partial))
    assert counts == {"queued": "1", "sending": "1", "sent": "1", "deferred": "1", "failed": "2", "skipped": "1"}
    assert 'id="outbox-counts"' in viewer_client.get(LIST).content.decode()


def test_the_chart_stacks_sent_deferred_failed_and_skipped_per_minute(viewer_client):
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=100)  # a bar a minute
    for seconds in (0, 10, 20):
        make_message(status=Status.SENT, sent_at=minute + timedelta(seconds=seconds))
    make_message(status=Status.DEFERRED, updated_at=minute + timedelta(seconds=30))
    make_message(status=Status.FAILED, updated_at=minute + timedelta(minutes=2))
    make_message(status=Status.SKIPPED, updated_at=minute + timedelta(minutes=2, seconds=5))
    make_message(status=Status.SENT, sent_at=minute - timedelta(days=2))  # outside the last day

    response = viewer_client.get(reverse("outbox:chart"), **HTMX)
    svg = re.search(r"<svg.*?</svg>", response.content.decode(), re.S).group(0)

    assert "<title>Messages sent, deferred, failed and skipped per minute</title>" in svg
    assert re.search(r'aria-label="[^"]*: 3 sent, 1 deferred, 1 failed, 1 skipped\.', svg)
    bar = r'<rect class="(\w+)" x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"><title>([^<]*)'
    bars = re.findall(bar, svg)
    when = timezone.localtime(minute).strftime("%H:%M")
    assert [(css, title) for css, _, _, _, title in bars] == [
        ("sent", f"{when}: 3 sent"),
        ("deferred", f"{when}: 1 deferred"),
        ("failed", f"{(timezone.localtime(minute) + timedelta(minutes=2)):%H:%M}: 1 failed"),
        ("skipped", f"{(timezone.localtime(minute) + timedelta(minutes=2)):%H:%M}: 1 skipped"),
    ]
    sent, deferred = bars[0], bars[1]
    assert sent[1] == deferred[1]  # one stack
    assert float(deferred[2]) + float(deferred[3]) == pytest.approx(float(sent[2]))  # on top of the sent bar
    assert float(sent[3]) == pytest.approx(3 * float(deferred[3]))
    assert 'hx-trigger="every 10s"' in response.content.decode()


def test_an_outbox_that_did_nothing_today_has_no_chart(viewer_client):
    make_message(status=Status.QUEUED)
    page = viewer_client.get(LIST).content.decode()
    assert "<svg" not in page and "Nothing sent, deferred, failed or skipped in the last 24 hours." in page


# -- one message --


def test_a_messages_page_shows_an_admin_its_envelope_headers_and_text_but_never_its_html(admin_client, make_server):
    message = make_message(
        to="Bob@example.test",
        subject="Größe 42",
        html='<p onclick="steal()">Hi <script>alert(1)</script></p>',
        server=make_server(name="SES"),
        status=Status.SENT,
    )

    page = admin_client.get(reverse("outbox:detail", args=[message.pk])).content.decode()

    assert "<h1>Größe 42</h1>" in page  # the header, decoded
    assert f"{message.size} bytes" in page and "Bob@example.test" in page and "shop@example.test" in page
    assert re.search(r"<th scope=\"row\">Subject</th><td>Größe 42</td>", page)
    assert f"<code>{message.message_id.replace('<', '&lt;').replace('>', '&gt;')}</code>" in page
    assert "Hi Bob,\nyour order &lt;ships&gt; today." in page
    assert "<code>text/html</code>" in page
    assert "steal()" not in page and "alert(1)" not in page
    assert "Only the beginning" not in page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SENDER])
def test_below_admin_a_messages_page_shows_its_envelope_and_status_but_not_its_headers_or_text(login_as, role):
    """A transactional message may hold a password-reset link or a one-time code."""
    message = make_message(to="bob@example.test", status=Status.FAILED, last_code=550, last_reply="5.1.1 No such user")

    page = login_as(role).get(reverse("outbox:detail", args=[message.pk])).content.decode()

    assert "bob@example.test" in page and "shop@example.test" in page and "Failed" in page
    assert "550 5.1.1 No such user" in page
    assert "your order" not in page and '<th scope="row">' not in page
    assert "Only admins see a message's headers and text" in page


def stored(data: bytes) -> OutboxMessage:
    """A message of these bytes, as a client may hand over anything."""
    [message] = queue.enqueue([queue.Envelope("app@example.test", ["bob@example.test"], data, source="relay")])
    return message


def test_only_the_beginning_of_a_large_message_is_read_for_its_page(admin_client, settings):
    settings.RELAY_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
    headers = b"".join(b"X-Header-%d: %d\r\n" % (n, n) for n in range(150))
    message = stored(b"Subject: big\r\n" + headers + b"\r\n" + b"a line of text\r\n" * 600_000)  # 9 MB

    page = admin_client.get(reverse("outbox:detail", args=[message.pk])).content.decode()

    assert "Only the beginning of this message is shown." in page
    assert page.count('<th scope="row">') == 100 and "X-Header-98" in page and "X-Header-99" not in page
    assert re.search(r"<li><code>text/plain</code>, 2\d\d\.\d\xa0KB</li>", page)  # of 9 MB


def test_a_message_the_email_package_cannot_read_is_said_so(admin_client):
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n) for n in range(1000))
    message = stored(b"Subject: deep\r\n" + nested + b"Content-Type: text/plain\r\n\r\nhi\r\n")  # RecursionError

    response = admin_client.get(reverse("outbox:detail", args=[message.pk]))

    assert response.status_code == 200
    assert "This message could not be shown" in response.content.decode()


def test_an_unknown_message_is_404(viewer_client):
    assert viewer_client.get(reverse("outbox:detail", args=[999])).status_code == 404


# -- requeue and delete, one at a time --


def test_requeue_puts_a_failed_message_back_in_line_and_wakes_the_delivery(
    sender_client, one_of_each, django_capture_on_commit_callbacks
):
    failed = one_of_each[Status.FAILED]
    OutboxMessage.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))

    with django_capture_on_commit_callbacks() as woken:
        response = sender_client.post(reverse("outbox:requeue", args=[failed.pk]) + "?status=failed&to=fail")

    assert response.status_code == 302 and response.url == f"{LIST}?status=failed&to=fail"
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.next_attempt_at) == (Status.QUEUED, 0, None)
    assert woken == [queue.wake]
    assert f"Message {failed.pk} queued again." in sender_client.get(response.url).content.decode()


def test_requeue_with_htmx_returns_the_updated_row(sender_client, one_of_each):
    deferred = one_of_each[Status.DEFERRED]
    response = sender_client.post(reverse("outbox:requeue", args=[deferred.pk]), **HTMX)
    row = response.content.decode()
    assert response.status_code == 200 and row.lstrip().startswith(f'<tr id="message-{deferred.pk}"')
    assert "Queued" in row and ">Requeue</button>" not in row
    assert OutboxMessage.objects.get(pk=deferred.pk).status == Status.QUEUED


@pytest.mark.parametrize("status", [Status.QUEUED, Status.SENDING, Status.SENT])
def test_only_deferred_failed_and_skipped_messages_can_be_requeued(sender_client, one_of_each, status):
    message = one_of_each[status]
    before = statuses()
    response = sender_client.post(reverse("outbox:requeue", args=[message.pk]), follow=True)
    assert statuses() == before
    assert f"Message {message.pk} is not deferred, failed or skipped: nothing to requeue." in response.content.decode()


def test_delete_removes_one_message(sender_client, one_of_each):
    sent = one_of_each[Status.SENT]
    response = sender_client.post(reverse("outbox:delete", args=[sent.pk]))
    assert response.status_code == 302 and response.url == LIST
    assert not OutboxMessage.objects.filter(pk=sent.pk).exists() and OutboxMessage.objects.count() == 5


def test_delete_with_htmx_removes_the_row(sender_client, one_of_each):
    failed = one_of_each[Status.FAILED]
    response = sender_client.post(reverse("outbox:delete", args=[failed.pk]), **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert not OutboxMessage.objects.filter(pk=failed.pk).exists()


def test_a_message_being_sent_cannot_be_deleted(sender_client, one_of_each):
    sending = one_of_each[Status.SENDING]

    plain = sender_client.post(reverse("outbox:delete", args=[sending.pk]), follow=True)
    htmx = sender_client.post(reverse("outbox:delete", args=[sending.pk]), **HTMX)

    assert f"Message {sending.pk} is being sent: it cannot be deleted now." in plain.content.decode()
    row = htmx.content.decode()
    assert row.lstrip().startswith(f'<tr id="message-{sending.pk}"') and "Sending" in row
    assert OutboxMessage.objects.get(pk=sending.pk).status == Status.SENDING


def test_the_rows_buttons_follow_the_status(sender_client, one_of_each):
    page = sender_client.get(LIST).content.decode()
    for status, message in one_of_each.items():
        row = re.search(rf'<tr id="message-{message.pk}".*?</tr>', page, re.S).group(0)
        assert (">Requeue</button>" in row) == (status in REQUEUABLE), status
        assert (">Delete</button>" in row) == (status != Status.SENDING), status


# -- by filter --


def test_requeue_by_filter_asks_first_then_requeues_only_what_the_filter_selects(
    sender_client, one_of_each, django_capture_on_commit_callbacks
):
    other_failed = make_message(to="other@example.test", status=Status.FAILED, attempts=5)
    url = reverse("outbox:requeue_filtered") + "?to=example.test&status=failed"
    before = statuses()

    asked = sender_client.post(url)
    assert asked.status_code == 200 and statuses() == before
    question = "2 deferred, failed or skipped messages that these filters select will be queued again."
    assert question in asked.content.decode()
    assert 'name="confirm" value="yes"' in asked.content.decode()

    with django_capture_on_commit_callbacks() as woken:
        done = sender_client.post(url, {"confirm": "yes"})

    assert done.status_code == 302 and done.url == f"{LIST}?status=failed&to=example.test"
    after = statuses()
    assert after[one_of_each[Status.FAILED].pk] == after[other_failed.pk] == (Status.QUEUED, 0)
    assert after[one_of_each[Status.DEFERRED].pk] == (Status.DEFERRED, 3)  # not selected
    assert woken == [queue.wake]
    assert "2 messages queued again." in sender_client.get(done.url).content.decode()


def test_requeue_everything_leaves_what_is_not_deferred_failed_or_skipped(sender_client, one_of_each):
    response = sender_client.post(reverse("outbox:requeue_filtered"), {"confirm": "yes"})
    assert response.status_code == 302
    assert {status: statuses()[message.pk][0] for status, message in one_of_each.items()} == {
        "queued": "queued",
        "sending": "sending",
        "sent": "sent",
        "deferred": "queued",
        "failed": "queued",
        "skipped": "queued",
    }


def test_delete_by_filter_with_htmx_deletes_all_but_what_is_being_sent(sender_client, one_of_each):
    response = sender_client.post(reverse("outbox:delete_filtered") + "?to=example", {"confirm": "yes"}, **HTMX)
    assert response.status_code == 200 and response.headers["HX-Redirect"] == f"{LIST}?to=example"
    assert list(OutboxMessage.objects.values_list("status", flat=True)) == [Status.SENDING]


def test_delete_by_filter_without_javascript_asks_first(sender_client, one_of_each):
    asked = sender_client.post(reverse("outbox:delete_filtered") + "?status=sent")
    assert "1 message that these filters select will be deleted." in asked.content.decode()
    assert OutboxMessage.objects.count() == 6


def test_an_action_with_a_filter_that_cannot_be_used_changes_nothing(sender_client, one_of_each):
    before = statuses()
    response = sender_client.post(reverse("outbox:delete_filtered") + "?since=yesterday", {"confirm": "yes"})
    assert response.status_code == 400 and "From</a>: Enter a valid date/time." in response.content.decode()
    assert statuses() == before


def test_the_bulk_buttons_carry_the_filter_and_confirm_with_htmx(sender_client, one_of_each):
    page = sender_client.get(LIST, {"status": "failed"}).content.decode()
    action = reverse("outbox:requeue_filtered") + "?status=failed"
    assert f'hx-post="{action}"' in page and f'action="{action}"' in page
    assert 'hx-vals=\'{"confirm": "yes"}\'' in page
    assert 'hx-confirm="Queue again every deferred, failed and skipped' in page
