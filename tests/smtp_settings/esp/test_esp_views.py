"""ESP entries on the settings page: the form, the card, and "Test connection" against a real
HTTP server on 127.0.0.1 answering as Postmark does. The API key is stored encrypted, never
sent back to the browser, and only ever sent to the ESP and API URL it was stored for."""

import pytest
from django.db import connection
from django.urls import reverse

from smtp_settings.esp.registry import ESPS
from smtp_settings.forms import SMTP_ONLY_FIELDS, SmtpServerForm
from smtp_settings.models import SmtpServer
from tests.esp_server import POSTMARK_TOKEN, Reply, esp_entry, fake_postmark, postmark_entry
from tests.smtp_settings.test_views import HTMX, _form_data

pytestmark = pytest.mark.django_db(transaction=True)  # the shared limits read servers from connections of their own

KEY = POSTMARK_TOKEN
RETYPE = "Type the API key again: the ESP or the API URL changed."


def _esp_data(**overrides) -> dict:
    """What the form posts for an ESP entry, without its hidden SMTP fields."""
    esp = {"name": "Postmark", "kind": "esp", "esp": "postmark", "api_key": KEY, "api_url": ""}
    extras = {"sender_domain": "", "message_stream": "broadcast", "send_timeout": "5", "quota_per_day": "1000"}
    smtp = {name: value for name, value in _form_data().items() if name not in SMTP_ONLY_FIELDS}
    return smtp | esp | extras | overrides


@pytest.fixture
def postmark(fake_esp):
    return fake_postmark(fake_esp)


@pytest.fixture
def entry(postmark, make_server):
    return postmark_entry(make_server, postmark, name="Postmark")


def _edit(admin_client, server, **overrides):
    data = _esp_data(api_url=server.api_url, api_key="", server_id=str(server.pk)) | overrides
    return admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), data)


def _stored_ciphertexts() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT esp_credentials FROM smtp_settings_smtpserver")
        return [row[0] for row in cursor.fetchall()]


# -- the form --


def test_an_esp_entry_saves_without_smtp_fields_and_keeps_its_key_encrypted(admin_client):
    response = admin_client.post(reverse("smtp_settings:create"), _esp_data())

    assert response.status_code == 302
    server = SmtpServer.objects.get()
    assert (server.kind, server.esp, server.host, server.api_url) == ("esp", "postmark", "", "")
    assert server.credentials == {"server_token": KEY, "message_stream": "broadcast"}
    assert (server.password, server.quota_per_day) == ("", 1000)
    [stored] = _stored_ciphertexts()
    assert stored and KEY not in stored and "server_token" not in stored


def test_the_key_never_appears_in_any_page(admin_client, entry):
    pages = [
        admin_client.get(reverse("smtp_settings:list")),
        admin_client.get(reverse("smtp_settings:edit", args=[entry.pk])),
        _edit(admin_client, entry, name="", api_key=KEY),  # an error: the form comes back
        admin_client.post(reverse("smtp_settings:create"), _esp_data(name="", api_key="typed-" + KEY), **HTMX),
    ]
    assert [page.status_code for page in pages] == [200, 200, 200, 200]
    for page in pages:
        assert KEY not in page.content.decode()
    assert "An API key is stored (encrypted)" in pages[1].content.decode()


@pytest.mark.parametrize(
    "overrides, label, error",
    [
        ({"esp": ""}, "ESP", "Choose the ESP whose API this entry sends through."),
        ({"esp": "sendmail"}, "ESP", "Select a valid choice."),
        ({"api_key": ""}, "API key or token", "Enter the Server API token of Postmark."),
        ({"api_url": "http://api.example.test/"}, "API base URL", "Use an https:// URL"),
        ({"api_url": "https://me:pw@api.example.test/"}, "API base URL", "Put no user name or password in the URL"),
        ({"api_url": "https://api.example.test/?token=1"}, "API base URL", "without a query or fragment"),
        ({"api_url": "ftp://api.example.test/"}, "API base URL", "Use an https:// URL"),
        ({"api_url": "api .example.test"}, "API base URL", "Enter a valid URL."),
        ({"esp": "postal"}, "API base URL", "Postal runs on your own server: enter its API URL."),
        ({"esp": "mailgun", "sender_domain": "not a domain"}, "Sender domain (Mailgun)", "neither a host name"),
        ({"message_stream": "my stream"}, "Message stream (Postmark)", "Letters, digits, _ and - only."),
        ({"max_conns": "0"}, "Max. connections", "Enter a whole number from 1 to 1,000."),
        ({"max_batch": "0"}, "Recipients per API call", "Enter a whole number from 1 to 1,000,000."),
        ({"max_batch": "-3"}, "Recipients per API call", "Enter a whole number from 1 to 1,000,000."),
        ({"max_batch": "51"}, "Recipients per API call", "At most 50: Postmark takes no more in one call."),
        ({"esp": "mailgun", "max_batch": "1001"}, "Recipients per API call", "At most 1,000: Mailgun takes no more"),
        ({"max_batch": "fifty"}, "Recipients per API call", "Enter a whole number from 1 to 1,000,000."),
        ({"max_batch": "5\x00"}, "Recipients per API call", "Enter a whole number from 1 to 1,000,000."),
    ],
)
def test_each_esp_field_is_checked_and_nothing_is_saved(admin_client, overrides, label, error):
    response = admin_client.post(reverse("smtp_settings:create"), _esp_data(**overrides))

    assert response.status_code == 200
    content = response.content.decode()
    assert f"{label}: " in content and error.replace("'", "&#x27;") in content
    assert not SmtpServer.objects.exists()


def test_an_smtp_entry_still_needs_its_host(admin_client):
    data = _esp_data(kind="smtp", host="", port="587", tls="starttls", auth_protocol="none")
    response = admin_client.post(reverse("smtp_settings:create"), data)

    assert "Host: Enter the SMTP server&#x27;s host name or IP address." in response.content.decode()
    assert not SmtpServer.objects.exists()


def test_a_blank_key_keeps_the_stored_one(admin_client, entry):
    assert _edit(admin_client, entry, message_stream="").status_code == 302

    entry.refresh_from_db()
    assert entry.credentials == {"server_token": KEY}


@pytest.mark.parametrize("change", [{"api_url": "http://127.0.0.2:9/"}, {"esp": "resend"}])
def test_another_esp_or_api_url_needs_the_key_typed_again(admin_client, entry, change):
    response = _edit(admin_client, entry, **change)

    assert RETYPE in response.content.decode()
    entry.refresh_from_db()
    assert (entry.esp, entry.credentials["server_token"]) == ("postmark", KEY)

    assert _edit(admin_client, entry, api_key="new-key", **change).status_code == 302
    entry.refresh_from_db()
    assert entry.credentials.get("server_token", entry.credentials.get("api_key")) == "new-key"


def test_an_entry_made_an_smtp_server_forgets_its_key(admin_client, entry):
    smtp = {"host": "smtp.example.test", "port": "587", "tls": "starttls", "auth_protocol": "none"}
    response = _edit(admin_client, entry, kind="smtp", max_msgs_per_conn="0", max_conn_age="0", **smtp)

    assert response.status_code == 302
    entry.refresh_from_db()
    assert (entry.kind, entry.esp, entry.api_url, entry.esp_credentials) == ("smtp", "", "", "")


@pytest.mark.parametrize("typed, saved, per_call", [("", None, 50), ("20", 20, 20), (" 50 ", 50, 50)])
def test_recipients_per_call_are_the_esps_limit_unless_the_entry_sets_fewer(admin_client, typed, saved, per_call):
    response = admin_client.post(reverse("smtp_settings:create"), _esp_data(max_batch=typed))

    assert response.status_code == 302
    server = SmtpServer.objects.get()
    assert (server.max_batch, server.recipients_per_call) == (saved, per_call)
    card = admin_client.get(reverse("smtp_settings:list")).content.decode()
    assert f"<dt>Recipients/call</dt><dd>{per_call}</dd>" in card


def test_the_form_says_what_a_blank_stands_for(admin_client, entry):
    new = admin_client.get(reverse("smtp_settings:create")).content.decode()
    edit = admin_client.get(reverse("smtp_settings:edit", args=[entry.pk])).content.decode()

    assert "blank: the ESP&#x27;s limit (Postmark 50, Mailgun 1,000, Brevo 99, Resend 50, Postal 50)." in new
    assert "blank: Postmark&#x27;s limit, 50." in edit


def test_an_entry_made_an_smtp_server_has_no_recipients_per_call(admin_client, make_server, postmark):
    entry = postmark_entry(make_server, postmark, max_batch=10)
    smtp = {"host": "smtp.example.test", "port": "587", "tls": "starttls", "auth_protocol": "none"}
    response = _edit(admin_client, entry, kind="smtp", max_msgs_per_conn="0", max_conn_age="0", max_batch="10", **smtp)

    assert response.status_code == 302
    entry.refresh_from_db()
    assert (entry.max_batch, entry.recipients_per_call) == (None, None)


def test_a_form_test_of_another_esp_ignores_the_stored_recipients_per_call(admin_client, make_server, fake_esp):
    """Test connection checks the connection only: a stored max_batch above the new ESP's
    limit is for the save to refuse."""
    mailgun = esp_entry(make_server, "mailgun", "", {"api_key": "mg-key"}, max_batch=500)
    other = fake_esp(routes={("GET", "/server"): lambda request: Reply(200, {"Name": "pm"})})
    data = _esp_data(api_url=other.url, server_id=str(mailgun.pk))

    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)

    assert response.status_code == 200 and "Connection works" in response.content.decode()


def test_every_esp_setting_of_the_registry_is_a_form_field():
    for esp in ESPS:
        assert set(esp.extras) <= set(SmtpServerForm.base_fields), esp.key


def test_the_card_says_which_esp_and_where(admin_client, entry, make_server):
    esp_entry(make_server, "resend", name="No key yet")

    content = admin_client.get(reverse("smtp_settings:list")).content.decode()

    assert f"Postmark API at {entry.api_url}" in content
    assert 'Resend API at https://api.resend.com/ <span class="warn">(no API key)</span>' in content


def test_the_model_rule(entry):
    where = {"esp": entry.esp, "api_url": entry.api_url}
    assert entry.credentials_may_go_to(**where)
    assert not entry.credentials_may_go_to(**(where | {"api_url": "https://api.postmarkapp.com/"}))
    assert not entry.credentials_may_go_to(**(where | {"esp": "mailgun"}))
    assert SmtpServer(kind="esp", esp="postmark").credentials_may_go_to(esp="mailgun", api_url="")  # nothing to leak


# -- test connection --


def test_a_saved_entry_is_tested_with_a_real_call_to_its_api(admin_client, entry, postmark):
    response = admin_client.post(reverse("smtp_settings:test", args=[entry.pk]), **HTMX)

    content = response.content.decode()
    assert content.startswith(f'<div id="test-result-{entry.pk}" class="test-result ok"')
    assert "Connection works" in content and "GET /server" in content and "Relaydeck tests" in content
    [request] = postmark.requests
    assert (request.method, request.path, request.headers["x-postmark-server-token"]) == ("GET", "/server", KEY)


def test_a_test_message_goes_through_the_api(admin_client, entry, postmark):
    response = admin_client.post(reverse("smtp_settings:test", args=[entry.pk]), {"to_email": "me@example.test"})

    assert "Connection works, and the test message was accepted" in response.content.decode()
    [post] = postmark.posts()
    assert post.json["To"] == "me@example.test" and post.json["Subject"] == "Relaydeck test message via Postmark"


def test_a_refused_key_is_explained_and_the_reply_is_escaped_and_cut_free_of_the_key(
    admin_client, make_server, fake_esp
):
    hostile = fake_esp(routes={("GET", "/server"): lambda request: Reply(401, {"Message": f"<b>no</b> {KEY}"})})
    server = postmark_entry(make_server, hostile)

    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX)

    content = response.content.decode()
    assert "Postmark refused the Server API token (401)." in content
    assert "&lt;b&gt;no&lt;/b&gt; [redacted]" in content and "<b>no</b>" not in content
    assert KEY not in content


def test_an_unsaved_form_is_tested_with_the_key_typed(admin_client, postmark):
    data = _esp_data(api_url=postmark.url)
    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)

    assert "Connection works" in response.content.decode()
    assert postmark.requests[0].headers["x-postmark-server-token"] == KEY


def test_an_edit_form_tests_the_stored_key_only_where_it_was_stored_for(admin_client, entry, postmark, fake_esp):
    other = fake_esp(routes={("GET", "/server"): lambda request: Reply(200, {"Name": "someone else's"})})
    stored_there = _esp_data(api_url=entry.api_url, api_key="", server_id=str(entry.pk))

    works = admin_client.post(reverse("smtp_settings:form_test"), stored_there, **HTMX)
    refused = admin_client.post(reverse("smtp_settings:form_test"), stored_there | {"api_url": other.url}, **HTMX)

    assert "Connection works" in works.content.decode()
    assert RETYPE.replace("'", "&#x27;") in refused.content.decode()
    assert other.requests == []


def test_an_esp_without_a_harmless_read_says_that_nothing_was_checked(admin_client, make_server, fake_esp):
    postal = fake_esp(routes={})
    server = esp_entry(make_server, "postal", postal.url, {"api_key": "postal-key"})

    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX)

    content = response.content.decode()
    assert (
        '<p class="verdict">Nothing was checked. Postal&#x27;s API has no read-only call: only a test message '
        "checks the API key and URL.</p>"
    ) in content
    assert "Connection works" not in content and 'class="test-result ok"' not in content
    assert postal.requests == []


def test_an_api_that_cannot_be_reached_is_explained(admin_client, make_server, closed_port):
    server = esp_entry(make_server, "postmark", f"http://127.0.0.1:{closed_port}/", {"server_token": "t0ken-1"})

    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX)

    content = response.content.decode()
    assert f"Postmark&#x27;s API at http://127.0.0.1:{closed_port}/ could not be reached." in content
    assert "ConnectionError" in content
