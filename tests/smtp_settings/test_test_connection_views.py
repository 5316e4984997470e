"""The "Test connection" buttons, on a saved server's card and on an unsaved form."""

import re

import pytest
from django.conf import settings
from django.urls import reverse

from smtp_settings.models import SmtpServer
from tests.smtp_settings.test_views import HTMX, SECRET, _form_data

pytestmark = pytest.mark.django_db(transaction=True)  # sending threads use connections of their own


def test_saved_server_test_with_htmx_returns_the_result_panel(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port)
    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX)
    content = response.content.decode()
    assert content.startswith(f'<div id="test-result-{server.pk}" class="test-result ok"')
    assert "Connection works" in content and "Relaydeck sandbox" in content


def test_saved_server_test_sends_a_message_through_the_stored_password(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:" + SECRET)
    server = make_server(port=sandbox.port, auth_protocol="plain", username="relay", password=SECRET)
    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), {"to_email": "me@example.test"})
    assert response.status_code == 200
    assert "Connection works" in response.content.decode()
    assert SECRET not in response.content.decode()
    assert [m.rcpt_tos for m in sandbox.received] == [("me@example.test",)]


def test_saved_server_test_rejects_a_bad_address(admin_client, make_server, smtp_sandbox):
    server = make_server(port=smtp_sandbox().port)
    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), {"to_email": "not-an-address"})
    assert response.status_code == 400
    assert "Send a test message to: Enter a valid email address." in response.content.decode()


def test_unsaved_form_can_be_tested_before_saving(admin_client, smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:s3cret")
    data = _form_data(
        name="",
        host="127.0.0.1",
        port=str(sandbox.port),
        tls="none",
        auth_protocol="login",
        username="relay",
        password="s3cret",
    )
    response = admin_client.post(reverse("smtp_settings:form_test"), {**data, "to_email": "me@example.test"}, **HTMX)
    content = response.content.decode()
    assert 'id="test-result-form" class="test-result ok"' in content
    assert len(sandbox.received) == 1
    assert b"X-Mailer: Relaydeck" in sandbox.received[0].data


def test_edit_form_test_uses_the_stored_password_when_the_field_is_blank(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:" + SECRET)
    server = make_server(port=sandbox.port, auth_protocol="login", username="relay", password=SECRET)
    data = _form_data(
        host="127.0.0.1", port=str(sandbox.port), tls="none", username="relay", password="", server_id=str(server.pk)
    )
    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)
    assert "Connection works" in response.content.decode()


def test_unsaved_form_with_invalid_values_names_the_field(admin_client):
    response = admin_client.post(reverse("smtp_settings:form_test"), _form_data(port="70000"), **HTMX)
    assert "Port: Enter a whole number from 1 to 65,535." in response.content.decode()
    plain = admin_client.post(reverse("smtp_settings:form_test"), _form_data(port="70000"))
    assert plain.status_code == 400


def test_failure_shows_one_sentence_and_the_raw_reply(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:s3cret")
    server = make_server(port=sandbox.port, auth_protocol="login", username="relay", password="wrong")
    content = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX).content.decode()
    assert "test-result failed" in content
    assert "Authentication failed (535): the server rejected the username or password." in content
    assert "Server said: <code>535 5.7.8 Authentication credentials invalid</code>" in content


def test_connection_refused_through_the_page(admin_client, make_server, closed_port):
    server = make_server(port=closed_port)
    content = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX).content.decode()
    assert f"Connection refused by 127.0.0.1:{closed_port}" in content


def test_server_text_is_escaped(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(refuse_with="554 <script>alert('pwned')</script> go away")
    server = make_server(port=sandbox.port)
    content = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX).content.decode()
    assert "<script>alert" not in content
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in content


def test_utf8_credentials_work_from_the_unsaved_form(admin_client, smtp_sandbox):
    sandbox = smtp_sandbox(auth="jörg:pässwörd")
    data = _form_data(
        host="127.0.0.1",
        port=str(sandbox.port),
        tls="none",
        auth_protocol="plain",
        username="jörg",
        password="pässwörd",
    )
    response = admin_client.post(reverse("smtp_settings:form_test"), {**data, "to_email": "me@example.test"})
    assert response.status_code == 200
    assert "Connection works" in response.content.decode()
    assert len(sandbox.received) == 1


def test_utf8_credentials_work_for_a_saved_server(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(auth="jörg:pässwörd")
    server = make_server(port=sandbox.port, auth_protocol="login", username="jörg", password="pässwörd")
    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), {"to_email": "me@example.test"})
    assert response.status_code == 200
    assert "Connection works" in response.content.decode()
    assert len(sandbox.received) == 1


def test_a_wrong_utf8_password_is_explained_not_a_server_error(admin_client, make_server, smtp_sandbox):
    sandbox = smtp_sandbox(auth="jörg:pässwörd")
    server = make_server(port=sandbox.port, auth_protocol="login", username="jörg", password="passwörd")
    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX)
    assert response.status_code == 200
    assert "Authentication failed (535)" in response.content.decode()


@pytest.mark.parametrize("field, label", [("to_email", "Send a test message to"), ("from_email", "From")])
def test_a_test_address_with_a_hidden_line_break_names_the_field(admin_client, make_server, field, label):
    server = make_server()
    data = {"to_email": "me@example.test", field: "me@exam\u2028ple.test"}
    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), data)
    assert response.status_code == 400
    assert f"{label}: Remove the line break or control character U+2028" in response.content.decode()


def test_each_step_reads_on_its_own_row_with_the_reply_beneath_at_full_width(admin_client, make_server, smtp_sandbox):
    server = make_server(port=smtp_sandbox().port, auth_protocol="none")

    response = admin_client.post(reverse("smtp_settings:test", args=[server.pk]), **HTMX)

    content = response.content.decode()
    steps = re.findall(
        r'<li class="ok">\s*<span class="step-name">✔ (\w+)</span>\s*<span class="step-time">[\d.]+ s</span>\s*'
        r'<div class="step-reply"><code>(\d{3})</code> ',
        content,
    )
    assert steps[:2] == [("connect", "220"), ("EHLO", "250")]
    assert "<table" not in content


def test_server_cards_keep_their_own_height():
    """A test result in one card must not stretch the card beside it."""
    css = (settings.BASE_DIR / "static/css/relaydeck.css").read_text()
    assert re.search(r"^\.cards \{[^}]*align-items: start;", css, flags=re.MULTILINE)


def test_without_javascript_the_form_comes_back_as_typed_with_the_result_and_no_password(admin_client, smtp_sandbox):
    sandbox = smtp_sandbox(auth="relay:s3cret-typed")
    data = _form_data(
        name="Typed name", host="127.0.0.1", port=str(sandbox.port), tls="none", auth_protocol="plain", username="relay"
    )
    response = admin_client.post(
        reverse("smtp_settings:form_test"), {**data, "password": "s3cret-typed", "to_email": "me@example.test"}
    )

    content = response.content.decode()
    assert response.status_code == 200 and 'id="server-form"' in content
    assert 'value="Typed name"' in content and 'value="me@example.test"' in content
    assert 'id="test-result-form"' in content and "Connection works" in content
    assert "s3cret-typed" not in content
    assert SmtpServer.objects.count() == 0  # tested, not saved
