"""The list pages: lists, subscribers (search, pages, row actions), CSV upload and import progress."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from campaigns import tasks
from campaigns.lists import views as list_views
from campaigns.models import Campaign, MailingList, Subscriber, SubscriberImport
from project.roles import Role
from smtp_settings.models import Suppression

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def news():
    return MailingList.objects.create(name="News", description="The weekly letter")


@pytest.fixture
def ann(news):
    subscriber = Subscriber.objects.create(email="ann@example.com", name="Ann Archer", attributes={"city": "Oslo"})
    subscriber.lists.add(news)
    return subscriber


@pytest.fixture
def queued_tasks(monkeypatch):
    """What the views enqueue, recorded: no worker reads the queue in tests."""
    queued = []
    monkeypatch.setattr(list_views, "async_task", lambda func, *args, **kwargs: queued.append((func, *args)))
    return queued


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def _csv(content: str, name: str = "people.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content.encode(), content_type="text/csv")


def _row_url(action: str, subscriber: Subscriber, mailing_list: MailingList) -> str:
    return reverse(f"lists:{action}", args=[mailing_list.pk, subscriber.pk])


ROW_ACTIONS = ["unsubscribe", "blocklist", "reactivate", "remove"]


def test_every_page_and_action_requires_login(client, news, ann):
    job = SubscriberImport.objects.create(mailing_list=news, original_name="a.csv")
    pages = [
        reverse("lists:index"),
        reverse("lists:detail", args=[news.pk]),
        reverse("lists:counts", args=[news.pk]),
        reverse("lists:delete", args=[news.pk]),
        reverse("lists:import_status", args=[job.pk]),
    ]
    actions = [
        reverse("lists:create"),
        reverse("lists:import", args=[news.pk]),
        reverse("lists:delete", args=[news.pk]),
    ]
    actions += [_row_url(action, ann, news) for action in ROW_ACTIONS]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    for url in actions:
        response = client.post(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    assert MailingList.objects.filter(pk=news.pk).exists() and ann.lists.exists()


def test_actions_refuse_get(sender_client, news, ann):
    urls = [reverse("lists:create"), reverse("lists:import", args=[news.pk])]
    urls += [_row_url(action, ann, news) for action in ROW_ACTIONS]
    for url in urls:
        assert sender_client.get(url).status_code == 405, url


def test_index_shows_each_list_with_active_and_total_counts(sender_client, news, ann):
    gone = Subscriber.objects.create(email="gone@example.com", status=Subscriber.Status.UNSUBSCRIBED)
    gone.lists.add(news)
    MailingList.objects.create(name="Offers")

    response = sender_client.get(reverse("lists:index"))

    assert response.status_code == 200
    rows = {item.name: (item.active, item.total) for item in response.context["lists"]}
    assert rows == {"News": (1, 2), "Offers": (0, 0)}
    assert b"The weekly letter" in response.content and b"New list" in response.content


def test_the_list_pages_counts_reload_when_an_import_ends_or_a_row_changes(login_as, news, ann):
    """An import's end and a Remove (subscribers-changed) reload the table, with its "N matches"
    and pager, and the page's "N active of M subscribers"; a status change (members-changed),
    which keeps the row in the table, reloads the counts alone."""
    page = login_as(Role.VIEWER).get(reverse("lists:detail", args=[news.pk]), {"q": "ann"}).content.decode()
    counts = re.search(r'<p id="list-counts"[^>]*>', page)[0]
    assert f'hx-get="{reverse("lists:counts", args=[news.pk])}"' in counts
    assert 'hx-trigger="subscribers-changed from:body, members-changed from:body"' in counts
    table = re.search(r'<div id="subscribers"[^>]*>', page)[0]
    assert 'hx-get="{}?q=ann&amp;page=1"'.format(reverse("lists:detail", args=[news.pk])) in table
    assert 'hx-trigger="subscribers-changed from:body"' in table
    assert "1 active of 1 subscriber." in page and "1 match." in page

    sender = login_as(Role.SENDER)
    unsubscribed = sender.post(_row_url("unsubscribe", ann, news), **HTMX)
    assert unsubscribed["HX-Trigger"] == "members-changed"
    assert "0 active of 1 subscriber." in sender.get(reverse("lists:counts", args=[news.pk]), **HTMX).content.decode()
    blocklisted = sender.post(_row_url("blocklist", ann, news), **HTMX)
    assert blocklisted["HX-Trigger"] == "members-changed"
    removed = sender.post(_row_url("remove", ann, news), **HTMX)
    assert removed["HX-Trigger"] == "subscribers-changed"
    assert "0 active of 0 subscribers." in sender.get(reverse("lists:counts", args=[news.pk])).content.decode()
    reloaded = sender.get(reverse("lists:detail", args=[news.pk]), {"q": "ann", "page": 1}, **HTMX).content.decode()
    assert "No subscriber matches “ann”." in reloaded and "match." not in reloaded
    assert sender.get(reverse("lists:counts", args=[news.pk + 1000])).status_code == 404


def test_counts_of_a_thousand_and_more_have_thousands_separators(sender_client, news):
    """Issue #14: "20000 / 20002" read badly; every count on the list pages is written 20,000."""
    many = Subscriber.objects.bulk_create(Subscriber(email=f"user{i:04}@example.com") for i in range(1_201))
    news.subscribers.add(*many)
    Subscriber.objects.filter(email="user0000@example.com").update(status=Subscriber.Status.UNSUBSCRIBED)
    SubscriberImport.objects.create(
        mailing_list=news, original_name="big.csv", status="done", rows_read=12_345, created=10_000, merged=2_000,
        invalid=345, errors=[{"line": 2, "reason": "no email"}],
    )  # fmt: skip

    index = sender_client.get(reverse("lists:index")).content.decode()
    detail = sender_client.get(reverse("lists:detail", args=[news.pk])).content.decode()

    assert '<td class="num">1,200</td>' in index and '<td class="num">1,201</td>' in index
    assert "1,200 active of 1,201 subscribers." in detail
    assert "Page 1 of 25 · 1,201 subscribers" in detail
    assert "12,345 rows read" in detail and "<strong>10,000</strong> new, <strong>2,000</strong> merged" in detail
    assert "(the first 1 of 345)" in detail


def test_create_list_redirects_to_it(sender_client):
    response = sender_client.post(reverse("lists:create"), {"name": "Offers", "description": ""})
    offers = MailingList.objects.get(name="Offers")
    assert response.status_code == 302 and response.url == reverse("lists:detail", args=[offers.pk])


def test_create_list_with_htmx_redirects_the_page(sender_client):
    response = sender_client.post(reverse("lists:create"), {"name": "Offers"}, **HTMX)
    offers = MailingList.objects.get(name="Offers")
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("lists:detail", args=[offers.pk])


@pytest.mark.parametrize(("headers", "status"), [(HTMX, 200), ({}, 400)])
def test_create_list_with_a_taken_or_blank_name_shows_the_field_error(sender_client, news, headers, status):
    for name, error in [("News", "already exists"), ("", "This field is required")]:
        response = sender_client.post(reverse("lists:create"), {"name": name}, **headers)
        assert response.status_code == status
        content = response.content.decode()
        assert "Name: " in content and error in content
        assert (b"<html" in response.content) == (not headers)
    assert MailingList.objects.count() == 1


def test_detail_shows_the_subscribers_50_to_a_page(sender_client, news):
    for i in range(60):
        Subscriber.objects.create(email=f"user{i:02}@example.com").lists.add(news)
    Subscriber.objects.create(email="elsewhere@example.com")

    first = sender_client.get(reverse("lists:detail", args=[news.pk]))
    second = sender_client.get(reverse("lists:detail", args=[news.pk]), {"page": 2})

    assert len(first.context["page"]) == 50 and "user00@example.com" in first.content.decode()
    assert [s.email for s in second.context["page"]][-1] == "user59@example.com"
    assert len(second.context["page"]) == 10
    assert "Page 2 of 2 · 60 subscribers" in second.content.decode()
    assert b"elsewhere@example.com" not in first.content + second.content


def test_search_matches_email_or_name_and_htmx_gets_the_table_alone(sender_client, news, ann):
    Subscriber.objects.create(email="bob@example.org", name="Bob").lists.add(news)
    url = reverse("lists:detail", args=[news.pk])

    by_name = sender_client.get(url, {"q": "archer"}, **HTMX)
    by_email = sender_client.get(url, {"q": "EXAMPLE.ORG"})
    nothing = sender_client.get(url, {"q": "zed"}, **HTMX)

    assert [s.email for s in by_name.context["page"]] == ["ann@example.com"]
    assert by_name.content.decode().startswith('<div id="subscribers"') and b"<html" not in by_name.content
    assert [s.email for s in by_email.context["page"]] == ["bob@example.org"]
    assert b"Import subscribers" in by_email.content
    assert "No subscriber matches “zed”." in nothing.content.decode()


def test_detail_of_a_missing_list_is_404(sender_client):
    assert sender_client.get(reverse("lists:detail", args=[999])).status_code == 404


@pytest.mark.parametrize(
    ("action", "status"), [("unsubscribe", "unsubscribed"), ("blocklist", "blocklisted"), ("reactivate", "active")]
)
def test_status_actions_with_htmx_return_the_updated_row(sender_client, news, ann, action, status):
    if action == "reactivate":
        ann.set_status(Subscriber.Status.UNSUBSCRIBED)

    response = sender_client.post(_row_url(action, ann, news), **HTMX)

    ann.refresh_from_db()
    assert ann.status == status
    assert (ann.unsubscribed_at is None) == (status == "active")
    assert response.status_code == 200
    content = response.content.decode()
    assert content.startswith(f'<tr id="subscriber-{ann.pk}" class="status-{status}">')
    assert ann.get_status_display() in content


def test_status_actions_without_htmx_redirect_to_the_list(sender_client, news, ann):
    response = sender_client.post(_row_url("blocklist", ann, news))
    assert response.status_code == 302 and response.url == reverse("lists:detail", args=[news.pk])
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.BLOCKLISTED
    page = sender_client.get(response.url)
    assert "ann@example.com is now blocklisted." in page.content.decode()


def test_blocklisting_puts_the_address_on_the_suppression_list_and_reactivating_leaves_it(login_as, news, ann):
    browser = login_as(Role.SENDER)
    browser.post(_row_url("blocklist", ann, news), **HTMX)

    entry = Suppression.objects.get()
    assert (entry.email, entry.reason) == ("ann@example.com", "manual")
    assert re.fullmatch(r"Blocklisted by sender-\d+ on the list “News”\.", entry.note)

    browser.post(_row_url("reactivate", ann, news), **HTMX)
    assert Subscriber.objects.get(pk=ann.pk).is_active and Suppression.objects.count() == 1


@pytest.mark.parametrize("action", ["unsubscribe", "remove"])
def test_other_row_actions_leave_the_suppression_list_alone(sender_client, news, ann, action):
    sender_client.post(_row_url(action, ann, news), **HTMX)
    assert not Suppression.objects.exists()


def test_row_actions_need_a_member_of_the_list(sender_client, news):
    stranger = Subscriber.objects.create(email="stranger@example.com")
    for action in ROW_ACTIONS:
        assert sender_client.post(_row_url(action, stranger, news), **HTMX).status_code == 404
    assert Subscriber.objects.get(pk=stranger.pk).status == Subscriber.Status.ACTIVE


def test_remove_with_htmx_takes_the_row_out_and_keeps_the_subscriber(sender_client, news, ann):
    offers = MailingList.objects.create(name="Offers")
    ann.lists.add(offers)

    response = sender_client.post(_row_url("remove", ann, news), **HTMX)

    assert response.status_code == 200 and response.content == b""
    assert list(Subscriber.objects.get(pk=ann.pk).lists.all()) == [offers]


@pytest.mark.parametrize("action, question", [("blocklist", "Blocklist "), ("remove", "Remove ")])
def test_blocklist_and_remove_ask_first_with_javascript_and_without(sender_client, news, ann, action, question):
    page = sender_client.get(reverse("lists:detail", args=[news.pk])).content.decode()
    confirm_url = reverse(f"lists:confirm_{action}", args=[news.pk, ann.pk])
    form = re.search(rf'<form method="get" action="{confirm_url}"[^>]*>', page).group(0)
    assert f'hx-post="{_row_url(action, ann, news)}"' in form  # with JavaScript: the browser asks, htmx posts
    assert f'hx-confirm="{question}ann@example.com' in form

    confirmation = sender_client.get(confirm_url)  # without: a page asks, and nothing changed yet

    content = confirmation.content.decode()
    assert f"<h1>{question}ann@example.com" in content
    assert f'<form method="post" action="{_row_url(action, ann, news)}">' in content
    assert 'name="csrfmiddlewaretoken"' in content
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.ACTIVE and news.subscribers.exists()


def test_the_confirmation_pages_need_a_member_and_a_sender(login_as, client, news, ann):
    stranger = Subscriber.objects.create(email="stranger@example.com")
    for action in ("blocklist", "remove"):
        assert (
            login_as(Role.SENDER).get(reverse(f"lists:confirm_{action}", args=[news.pk, stranger.pk])).status_code
            == 404
        )
        url = reverse(f"lists:confirm_{action}", args=[news.pk, ann.pk])
        assert login_as(Role.VIEWER).get(url).status_code == 403
        assert client.get(url).url.startswith(reverse("login"))


def test_unsubscribe_and_reactivate_need_no_confirmation(sender_client, news, ann):
    page = sender_client.get(reverse("lists:detail", args=[news.pk])).content.decode()
    assert re.search(rf'<form method="post" action="{_row_url("unsubscribe", ann, news)}" hx-post="[^"]+" [^>]*>', page)
    assert 'hx-confirm="Unsubscribe' not in page


def test_remove_without_htmx_redirects_to_the_list(sender_client, news, ann):
    response = sender_client.post(_row_url("remove", ann, news))
    assert response.status_code == 302 and response.url == reverse("lists:detail", args=[news.pk])
    assert not news.subscribers.exists() and Subscriber.objects.filter(pk=ann.pk).exists()


def test_upload_with_htmx_queues_the_import_and_shows_its_status(
    sender_client, news, media, queued_tasks, django_capture_on_commit_callbacks
):
    content = "email,name,city\nann@example.com,Ann,Oslo\nbob@,Bob,x\n"
    with django_capture_on_commit_callbacks(execute=True):
        response = sender_client.post(reverse("lists:import", args=[news.pk]), {"file": _csv(content)}, **HTMX)

    job = SubscriberImport.objects.get()
    assert (job.mailing_list, job.original_name, job.size_bytes, job.status) == (
        news,
        "people.csv",
        len(content),
        "queued",
    )
    assert (media / job.file.name).read_text() == content
    assert queued_tasks == [("campaigns.tasks.import_csv", job.pk)]
    body = response.content.decode()
    assert body.startswith('<form id="import-form"')  # a fresh form...
    assert 'hx-swap-oob="afterbegin:#imports"' in body  # ...and the new import on top of the others
    assert f'hx-get="{reverse("lists:import_status", args=[job.pk])}?polling=1" hx-trigger="every 1s"' in body

    tasks.import_csv(job.pk)  # what the worker does

    status = sender_client.get(reverse("lists:import_status", args=[job.pk]), {"polling": "1"}, **HTMX)
    job.refresh_from_db()
    assert job.status == "done" and (job.created, job.invalid) == (1, 1)
    assert news.subscribers.get().email == "ann@example.com"
    body = status.content.decode()
    assert "every 1s" not in body  # polling stops
    assert "<strong>1</strong> new" in body and "'bob@' is not a valid email address" not in body  # escaped:
    assert "&#x27;bob@&#x27; is not a valid email address" in body
    assert status["HX-Trigger"] == "subscribers-changed"  # the table reloads once, and the counts with it
    counts = sender_client.get(reverse("lists:counts", args=[news.pk]), **HTMX).content.decode()
    assert counts.startswith('<p id="list-counts"') and "1 active of 1 subscriber." in counts


def test_upload_without_htmx_redirects_to_the_import_page(sender_client, news, media, queued_tasks):
    response = sender_client.post(reverse("lists:import", args=[news.pk]), {"file": _csv("email\nann@example.com\n")})

    job = SubscriberImport.objects.get()
    assert response.status_code == 302 and response.url == reverse("lists:import_status", args=[job.pk])
    page = sender_client.get(response.url)
    assert "Waiting for a worker" in page.content.decode() and "Reload this page" in page.content.decode()


@pytest.mark.parametrize(
    ("upload", "error"),
    [
        (SimpleUploadedFile("people.csv", b""), "The submitted file is empty."),
        (SimpleUploadedFile("people.xlsx", b"email\na@example.com\n"), "“people.xlsx” is not a .csv file."),
        (SimpleUploadedFile("people.csv", b"PK\x03\x04\x00\x00binary"), "is not text (a spreadsheet?)"),
        (SimpleUploadedFile("people.csv", b"name,city\nAnn,Oslo\n"), "Nothing can be imported: the header row has no"),
        (None, "This field is required."),
    ],
)
def test_an_unusable_upload_is_a_field_error_and_saves_nothing(sender_client, news, media, queued_tasks, upload, error):
    data = {"file": upload} if upload else {}
    url = reverse("lists:import", args=[news.pk])

    htmx = sender_client.post(url, data, **HTMX)
    if upload:
        upload.seek(0)
    plain = sender_client.post(url, data)

    assert htmx.status_code == 200 and plain.status_code == 400
    for response in (htmx, plain):
        content = response.content.decode().replace("&#x27;", "'")
        assert "CSV file: " in content and error in content
    assert not SubscriberImport.objects.exists() and queued_tasks == []
    assert not media.exists() or not any(media.rglob("*.*"))


@pytest.mark.parametrize("headers, status", [(HTMX, 200), ({}, 400)], ids=["htmx", "plain"])
def test_an_upload_larger_than_the_limit_is_a_field_error_and_saves_nothing(
    sender_client, news, media, queued_tasks, settings, headers, status
):
    settings.IMPORT_MAX_BYTES = 30
    content = b"email\nann@example.com\nbob@example.com\n"  # 38 bytes
    upload = SimpleUploadedFile("people.csv", content)

    response = sender_client.post(reverse("lists:import", args=[news.pk]), {"file": upload}, **headers)

    assert response.status_code == status
    assert (
        "CSV file: “people.csv” is too large: it has 38 bytes, and an import may have at most 30 (IMPORT_MAX_BYTES). "
        "Split it into smaller files." in response.content.decode()
    )
    assert not SubscriberImport.objects.exists() and queued_tasks == []
    assert not media.exists() or not any(media.rglob("*.*"))


def test_an_upload_at_the_limit_is_imported(sender_client, news, media, queued_tasks, settings):
    content = b"email\nann@example.com\nbob@example.com\n"
    settings.IMPORT_MAX_BYTES = len(content)

    sender_client.post(reverse("lists:import", args=[news.pk]), {"file": SimpleUploadedFile("people.csv", content)})

    assert SubscriberImport.objects.get().size_bytes == len(content)


def test_import_status_shows_progress_while_running(sender_client, news):
    job = SubscriberImport.objects.create(
        mailing_list=news, original_name="big.csv", size_bytes=2048, status="running", bytes_read=1024, rows_read=10
    )
    body = sender_client.get(reverse("lists:import_status", args=[job.pk]), **HTMX).content.decode()
    assert '<progress value="1024" max="2048"' in body and "10 rows read (1.0\xa0KB of 2.0\xa0KB)" in body
    assert "every 1s" in body


def test_import_status_escapes_what_the_file_said(sender_client, news):
    job = SubscriberImport.objects.create(
        mailing_list=news,
        original_name="<b>x</b>.csv",
        status="done",
        invalid=1,
        errors=[{"line": 7, "reason": "'<script>alert(1)</script>' is not a valid email address"}],
    )
    body = sender_client.get(reverse("lists:import_status", args=[job.pk]), **HTMX).content.decode()
    assert "<script>" not in body and "<b>x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and '<td class="num">7</td>' in body


def test_import_status_of_a_failed_import_gives_the_reason(sender_client, news):
    job = SubscriberImport.objects.create(
        mailing_list=news, original_name="a.csv", status="failed", failure="Nothing was imported: the file is empty."
    )
    body = sender_client.get(reverse("lists:import_status", args=[job.pk])).content.decode()
    assert "Nothing was imported: the file is empty." in body and "<html" in body


def test_detail_shows_recent_imports(sender_client, news):
    SubscriberImport.objects.create(mailing_list=news, original_name="first.csv", status="done", created=3)
    body = sender_client.get(reverse("lists:detail", args=[news.pk])).content.decode()
    assert "first.csv" in body and "<strong>3</strong> new" in body
    assert 'src="/static/js/uploads.js"' in body


def test_delete_list_asks_then_deletes_it_and_keeps_its_subscribers(sender_client, news, ann):
    url = reverse("lists:delete", args=[news.pk])
    assert "Delete “News”?" in sender_client.get(url).content.decode()

    response = sender_client.post(url)

    assert response.status_code == 302 and response.url == reverse("lists:index")
    assert not MailingList.objects.exists() and Subscriber.objects.filter(pk=ann.pk).exists()


def test_delete_list_with_htmx_redirects_the_page(sender_client, news):
    response = sender_client.post(reverse("lists:delete", args=[news.pk]), **HTMX)
    assert response["HX-Redirect"] == reverse("lists:index") and not MailingList.objects.exists()


def test_a_list_a_campaign_is_sending_to_cannot_be_deleted(sender_client, news):
    campaign = Campaign.objects.create(name="Spring", subject="Hi", from_email="a@example.com", status="running")
    campaign.lists.add(news)
    url = reverse("lists:delete", args=[news.pk])

    assert "Cancel or finish them first" in sender_client.get(url).content.decode()
    response = sender_client.post(url)

    assert response.status_code == 409 and "in use by “Spring”" in response.content.decode()
    assert MailingList.objects.filter(pk=news.pk).exists()
