"""The SMTP settings page: every view, with and without htmx."""

import pytest
from django.urls import reverse

from smtp_settings.models import SmtpServer

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SECRET = "pw-Zq8!never-shown"


def _form_data(**overrides) -> dict:
    data = {
        "name": "Primary relay",
        "enabled": "on",
        "host": "smtp.example.test",
        "port": "587",
        "tls": "starttls",
        "helo_hostname": "",
        "auth_protocol": "login",
        "username": "relay@example.test",
        "password": SECRET,
        "max_conns": "10",
        "max_msgs_per_conn": "300",
        "retries": "2",
        "idle_timeout": "5",
        "max_conn_age": "0",
        "wait_timeout": "5",
        "send_timeout": "30",
        "rate_limit": "14",
        "rate_per_minute": "0",
        "rate_counts": "recipients",
        "quota_per_hour": "0",
        "quota_per_day": "50000",
        "quota_counts": "recipients",
        "custom_headers_name": ["X-Mailer", ""],
        "custom_headers_value": ["Relaydeck", ""],
    }
    return data | overrides


@pytest.fixture
def server(make_server):
    return make_server(name="Existing", auth_protocol="login", username="u", password=SECRET)


def _page_urls(server) -> list[str]:
    return [
        reverse("smtp_settings:list"),
        reverse("smtp_settings:create"),
        reverse("smtp_settings:edit", args=[server.pk]),
        reverse("smtp_settings:delete", args=[server.pk]),
    ]


def test_every_page_requires_login(client, server):
    for url in _page_urls(server):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login"))
    for name in ("toggle", "test", "delete"):
        response = client.post(reverse(f"smtp_settings:{name}", args=[server.pk]))
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert SmtpServer.objects.get(pk=server.pk).enabled


def test_login_page_is_public_and_styled(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"relaydeck.css" in response.content


def test_list_shows_each_server_with_its_limits(admin_client, make_server):
    make_server(name="SES", max_msgs_per_conn=300, max_conns=10, rate_limit=14)
    make_server(name="Exchange", max_conns=15, enabled=False)
    response = admin_client.get(reverse("smtp_settings:list"))
    content = response.content.decode()
    assert "SES" in content and "Exchange" in content
    assert "300" in content and "14/s" in content
    assert "Disabled" in content
    assert "htmx" in content  # htmx is served from the package through static files


def test_create_saves_and_redirects(admin_client):
    response = admin_client.post(reverse("smtp_settings:create"), _form_data())
    assert response.status_code == 302 and response.url == reverse("smtp_settings:list")
    server = SmtpServer.objects.get()
    assert (server.max_msgs_per_conn, server.rate_limit, server.password) == (300, 14.0, SECRET)
    assert server.custom_headers == [["X-Mailer", "Relaydeck"]]


def test_create_with_htmx_answers_with_a_client_redirect(admin_client):
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(), **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("smtp_settings:list")
    assert SmtpServer.objects.count() == 1


@pytest.mark.parametrize(
    "overrides, field_label",
    [
        ({"port": "0"}, "Port"),
        ({"port": "70000"}, "Port"),
        ({"max_conns": "-1"}, "Max. connections"),
        ({"retries": "-3"}, "Retries"),
        ({"tls": "tls1.0"}, "TLS"),
        ({"host": ""}, "Host"),
        ({"helo_hostname": "hé.example"}, "HELO hostname"),  # EHLO is ASCII
        ({"custom_headers_name": ["X-Bad:Name"], "custom_headers_value": ["v"]}, "Custom headers"),
        ({"custom_headers_name": ["X-Bad\r\nBcc"], "custom_headers_value": ["v"]}, "Custom headers"),
        ({"custom_headers_name": ["X-Ok"], "custom_headers_value": ["a\r\nBcc: x@example.test"]}, "Custom headers"),
        ({"custom_headers_name": ["X-Ok"], "custom_headers_value": ["a\x0bBcc : x@example.test"]}, "Custom headers"),
        ({"custom_headers_name": ["X-Ok"], "custom_headers_value": ["a\u2028Bcc: x@example.test"]}, "Custom headers"),
    ],
)
@pytest.mark.parametrize("headers", [{}, HTMX], ids=["plain", "htmx"])
def test_invalid_input_names_the_field_and_saves_nothing(admin_client, overrides, field_label, headers):
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(**overrides), **headers)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Nothing was saved" in content
    assert f"{field_label}</a>:" in content
    assert SmtpServer.objects.count() == 0
    assert SECRET not in content


def test_duplicate_name_is_a_form_error(admin_client, server):
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(name="Existing"))
    assert "Name</a>: SMTP server with this Name already exists." in response.content.decode()
    assert SmtpServer.objects.count() == 1


def test_password_never_appears_in_any_response(admin_client, server):
    urls = [*_page_urls(server), reverse("admin:smtp_settings_smtpserver_change", args=[server.pk])]
    for url in urls:
        assert SECRET not in admin_client.get(url).content.decode(), url
    failed_edit = admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), _form_data(port="0"))
    assert SECRET not in failed_edit.content.decode()


def test_edit_with_a_blank_password_keeps_the_stored_one(admin_client, server):
    # Same host, port, username, TLS and auth: the password may go on to them (see test_password_rule.py).
    endpoint = {"host": server.host, "port": str(server.port), "username": server.username, "tls": server.tls}
    data = _form_data(name="Renamed", password="", **endpoint)
    response = admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), data)
    assert response.status_code == 302
    server.refresh_from_db()
    assert (server.name, server.password) == ("Renamed", SECRET)


def test_edit_can_replace_or_remove_the_password(admin_client, server):
    admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), _form_data(password="n3w-one"))
    server.refresh_from_db()
    assert server.password == "n3w-one"
    admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), _form_data(password="", clear_password="on"))
    server.refresh_from_db()
    assert server.password == ""


def test_edit_with_htmx_rerenders_only_the_form_on_error(admin_client, server):
    response = admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), _form_data(port="0"), **HTMX)
    content = response.content.decode()
    assert content.lstrip().startswith('<form id="server-form"')
    assert "<html" not in content


@pytest.mark.parametrize("preset, host, cap", [("ses", "amazonaws.com", "300"), ("microsoft365", "office365", "0")])
def test_presets_fill_host_and_safe_limits(admin_client, preset, host, cap):
    response = admin_client.get(reverse("smtp_settings:create"), {"preset": preset})
    content = response.content.decode()
    assert host in content
    assert f'name="max_msgs_per_conn" value="{cap}"' in content
    assert "preset." in content  # the preset's note says where its numbers come from
    partial = admin_client.get(reverse("smtp_settings:create"), {"preset": preset}, **HTMX)
    assert partial.content.decode().lstrip().startswith('<form id="server-form"')


def test_toggle_flips_enabled(admin_client, server):
    response = admin_client.post(reverse("smtp_settings:toggle", args=[server.pk]))
    assert response.status_code == 302
    server.refresh_from_db()
    assert not server.enabled


def test_toggle_with_htmx_returns_the_card(admin_client, server):
    response = admin_client.post(reverse("smtp_settings:toggle", args=[server.pk]), **HTMX)
    content = response.content.decode()
    assert content.lstrip().startswith(f'<article class="card disabled" id="server-{server.pk}"')
    server.refresh_from_db()
    assert not server.enabled


@pytest.mark.parametrize("name", ["toggle", "test"])
def test_mutating_views_refuse_get(admin_client, server, name):
    assert admin_client.get(reverse(f"smtp_settings:{name}", args=[server.pk])).status_code == 405
    server.refresh_from_db()
    assert server.enabled


def test_delete_asks_for_confirmation_then_deletes(admin_client, server):
    confirm = admin_client.get(reverse("smtp_settings:delete", args=[server.pk]))
    assert "Delete “Existing”?" in confirm.content.decode()
    assert SmtpServer.objects.count() == 1
    response = admin_client.post(reverse("smtp_settings:delete", args=[server.pk]))
    assert response.status_code == 302
    assert SmtpServer.objects.count() == 0


def test_delete_with_htmx_removes_the_card(admin_client, server):
    response = admin_client.post(reverse("smtp_settings:delete", args=[server.pk]), **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert SmtpServer.objects.count() == 0


def test_unknown_server_is_404(admin_client):
    assert admin_client.get(reverse("smtp_settings:edit", args=[999])).status_code == 404
    assert admin_client.post(reverse("smtp_settings:toggle", args=[999])).status_code == 404


def test_admin_registers_servers_with_a_write_only_password(admin_client, server):
    response = admin_client.get(reverse("admin:smtp_settings_smtpserver_change", args=[server.pk]))
    assert response.status_code == 200
    assert 'type="password"' in response.content.decode()


def test_learned_limits_show_on_the_card_and_apply_in_one_click(admin_client, server):
    server.record_learned("msgs_per_conn", 45)
    server.record_learned("max_conns", 5)
    content = admin_client.get(reverse("smtp_settings:list")).content.decode()
    assert "45 messages per connection" in content and "5 connections" in content
    response = admin_client.post(reverse("smtp_settings:apply_learned", args=[server.pk]), **HTMX)
    assert response.content.decode().lstrip().startswith(f'<article class="card" id="server-{server.pk}"')
    server.refresh_from_db()
    assert (server.max_msgs_per_conn, server.max_conns, server.learned_msgs_per_conn) == (45, 5, None)


def test_apply_learned_without_htmx_redirects(admin_client, server):
    server.record_learned("msgs_per_conn", 300)
    response = admin_client.post(reverse("smtp_settings:apply_learned", args=[server.pk]))
    assert response.status_code == 302
    server.refresh_from_db()
    assert server.max_msgs_per_conn == 300
    assert admin_client.get(reverse("smtp_settings:apply_learned", args=[server.pk])).status_code == 405
