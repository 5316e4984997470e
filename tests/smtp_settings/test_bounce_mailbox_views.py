"""The bounce mailboxes page: every view, with and without htmx, against a real Dovecot where
a view talks to the mailbox. Viewers read it; admins change it; the password never comes back."""

import re

import pytest
from django.db import connection
from django.urls import reverse

from project.roles import Role
from smtp_settings.models import Bounce, BounceMailbox
from tests.dovecot import Dovecot
from tests.smtp_settings.bounces.test_reports import dsn_for

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SECRET = Dovecot.password


def _form_data(**overrides) -> dict:
    data = {
        "name": "Bounces",
        "enabled": "on",
        "protocol": "imap",
        "host": "imap.example.test",
        "port": "993",
        "tls": "ssl",
        "username": "bounces@example.test",
        "password": SECRET,
        "folder": "INBOX",
    }
    return data | overrides


@pytest.fixture
def mailbox(make_mailbox):
    return make_mailbox(name="Existing", host="imap.example.test", username="bounces@example.test")


@pytest.fixture
def on_dovecot(dovecot, make_mailbox, trust_test_ca):
    """A mailbox reading Dovecot over IMAPS, with one bounce waiting."""
    dovecot.deliver(dsn_for(recipient="gone@example.net", reference="d5"))
    return make_mailbox(name="Dovecot", port=dovecot.ports["imaps"])


def _url(name: str, mailbox: BounceMailbox | None = None) -> str:
    return reverse(f"bounce_mailboxes:{name}", args=[mailbox.pk] if mailbox else [])


def test_viewers_see_the_mailboxes_without_a_button_to_press(login_as, mailbox):
    content = login_as(Role.VIEWER).get(_url("list")).content.decode()
    assert "Existing" in content and "imap.example.test:993" in content and "Not checked yet." in content
    for name in ("edit", "delete", "toggle", "check", "test"):
        assert _url(name, mailbox) not in content
    assert _url("create") not in content


def test_admins_see_every_action(admin_client, mailbox):
    content = admin_client.get(_url("list")).content.decode()
    for name in ("edit", "delete", "toggle", "check", "test"):
        assert _url(name, mailbox) in content
    assert _url("create") in content


def test_the_smtp_settings_page_links_to_it(login_as):
    assert _url("list") in login_as(Role.VIEWER).get(reverse("smtp_settings:list")).content.decode()


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_create_saves_the_password_encrypted(admin_client, headers):
    response = admin_client.post(_url("create"), _form_data(), **headers)

    assert response.status_code == 200 if headers else 302
    mailbox = BounceMailbox.objects.get()
    assert (mailbox.name, mailbox.password) == ("Bounces", SECRET)
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM smtp_settings_bouncemailbox")
        [(stored,)] = cursor.fetchall()
    assert SECRET not in stored


@pytest.mark.parametrize(
    "overrides, field_label, error",
    [
        ({"port": "0"}, "Port", "Enter a whole number from 1 to 65,535."),
        ({"port": "65536"}, "Port", "Enter a whole number from 1 to 65,535."),
        ({"host": ""}, "Host", "This field is required."),
        ({"host": "imap example"}, "Host", ""),
        ({"protocol": "smtp"}, "Protocol", "not one of the available choices"),
        ({"tls": "none"}, "TLS", "not one of the available choices"),  # TLS is not optional
        ({"username": "a\r\nb"}, "Username", "printable ASCII"),
        ({"password": "x\r\na001 DELETE INBOX"}, "Password", "printable ASCII"),
        ({"password": "pässword"}, "Password", "printable ASCII"),
        ({"password": ""}, "Password", "Enter the mailbox&#x27;s password."),
        ({"folder": "IN\x00BOX"}, "Folder", ""),
        ({"name": ""}, "Name", "This field is required."),
    ],
)
def test_invalid_input_names_the_field_and_saves_nothing(admin_client, overrides, field_label, error):
    response = admin_client.post(_url("create"), _form_data(**overrides))

    assert response.status_code == 400
    content = response.content.decode()
    assert "Nothing was saved" in content
    assert re.search(f"{field_label}</a>: [^<]*{re.escape(error)}", content)
    assert not BounceMailbox.objects.exists()


def test_the_password_never_appears_in_any_response(admin_client, mailbox):
    for url in (_url("list"), _url("create"), _url("edit", mailbox), _url("delete", mailbox)):
        assert SECRET not in admin_client.get(url).content.decode(), url
    failed = admin_client.post(_url("edit", mailbox), _form_data(port="0"))
    assert failed.status_code == 400 and SECRET not in failed.content.decode()


def test_an_edit_with_a_blank_password_keeps_the_stored_one(admin_client, mailbox):
    response = admin_client.post(_url("edit", mailbox), _form_data(name="Renamed", password="", folder="Bounces"))

    assert response.status_code == 302
    mailbox.refresh_from_db()
    assert (mailbox.name, mailbox.folder, mailbox.password) == ("Renamed", "Bounces", SECRET)


@pytest.mark.parametrize(
    "change",
    [
        {"host": "attacker.example.test"},
        {"port": "143"},
        {"username": "someone-else"},
        {"protocol": "pop3"},
        {"tls": "starttls"},
        {"tls_skip_verify": "on"},
    ],
)
def test_pointing_the_password_elsewhere_needs_it_typed_again(admin_client, mailbox, change):
    response = admin_client.post(_url("edit", mailbox), _form_data(password="", **change))

    assert response.status_code == 400
    assert "Password</a>: Type the password again: the protocol, host, port, username or TLS changed." in (
        response.content.decode()
    )
    mailbox.refresh_from_db()
    assert (mailbox.host, mailbox.port, mailbox.username, mailbox.protocol) == (
        "imap.example.test",
        993,
        "bounces@example.test",
        "imap",
    )
    retyped = admin_client.post(_url("edit", mailbox), _form_data(password="the-new-hosts-password", **change))
    assert retyped.status_code == 302
    mailbox.refresh_from_db()
    assert mailbox.password == "the-new-hosts-password"


def test_toggle_flips_enabled(admin_client, mailbox):
    assert admin_client.post(_url("toggle", mailbox)).status_code == 302
    mailbox.refresh_from_db()
    assert not mailbox.enabled
    response = admin_client.post(_url("toggle", mailbox), **HTMX)
    assert response.content.decode().startswith(f'<article class="card" id="mailbox-{mailbox.pk}">')
    mailbox.refresh_from_db()
    assert mailbox.enabled


@pytest.mark.parametrize("name", ["toggle", "check", "test"])
def test_mutating_views_refuse_get(admin_client, mailbox, name):
    assert admin_client.get(_url(name, mailbox)).status_code == 405


def test_delete_asks_for_confirmation_then_deletes(admin_client, mailbox):
    assert "Delete “Existing”?" in admin_client.get(_url("delete", mailbox)).content.decode()
    assert admin_client.post(_url("delete", mailbox)).status_code == 302
    assert not BounceMailbox.objects.exists()


def test_delete_with_htmx_removes_the_card(admin_client, mailbox):
    response = admin_client.post(_url("delete", mailbox), **HTMX)
    assert (response.status_code, response.content) == (200, b"")
    assert not BounceMailbox.objects.exists()


def test_check_now_with_htmx_reads_the_mailbox_and_shows_how_many(admin_client, on_dovecot):
    response = admin_client.post(_url("check", on_dovecot), **HTMX)

    content = response.content.decode()
    assert content.startswith(f'<article class="card" id="mailbox-{on_dovecot.pk}">')
    assert "1 new report read." in content
    assert list(Bounce.objects.values_list("email", "reference")) == [("gone@example.net", "d5")]


def test_check_now_without_htmx_says_so_on_the_list(admin_client, on_dovecot):
    response = admin_client.post(_url("check", on_dovecot), follow=True)
    assert "“Dovecot”: 1 new report read." in response.content.decode()


def test_what_a_server_says_is_shown_escaped(admin_client, hostile_smtp, make_mailbox, settings):
    settings.BOUNCE_MAILBOX_TIMEOUT_S = 2
    server = hostile_smtp(banner="<script>alert(1)</script>")
    mailbox = make_mailbox(name="Hostile", port=server.port, tls="starttls")

    content = admin_client.post(_url("check", mailbox), **HTMX).content.decode()

    assert "<script>alert(1)" not in content
    assert "unexpected response: b&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in content
    plain = admin_client.post(_url("check", mailbox), follow=True).content.decode()
    assert "<script>alert(1)" not in plain and "&lt;script&gt;alert(1)&lt;/script&gt;" in plain


def test_test_connection_logs_in_and_counts_changing_nothing(admin_client, dovecot, on_dovecot):
    response = admin_client.post(_url("test", on_dovecot), **HTMX)

    assert "✔ Logged in: INBOX holds 1 message. Nothing was changed." in response.content.decode()
    assert dovecot.count() == (1, 1)
    assert not Bounce.objects.exists()
    page = admin_client.post(_url("test", on_dovecot)).content.decode()
    assert "<h1>Connection test: Dovecot</h1>" in page and "holds 1 message" in page


def test_test_connection_with_a_wrong_password_says_so(admin_client, on_dovecot):
    BounceMailbox.objects.filter(pk=on_dovecot.pk).update(password="not-the-password-9")

    content = admin_client.post(_url("test", on_dovecot), **HTMX).content.decode()

    assert "✘ Authentication failed: [AUTHENTICATIONFAILED] Authentication failed." in content
    assert "not-the-password-9" not in content


def test_an_unknown_mailbox_is_404(admin_client):
    assert admin_client.get(reverse("bounce_mailboxes:edit", args=[999])).status_code == 404
