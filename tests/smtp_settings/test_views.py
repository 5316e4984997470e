"""The SMTP settings page: every view, with and without htmx."""

import re

import pytest
from django import forms
from django.urls import reverse

from smtp_settings.forms import SmtpServerForm
from smtp_settings.models import SmtpServer
from smtp_settings.presets import PRESETS

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


def test_the_bounce_domain_is_saved_and_shown_again(admin_client):
    admin_client.post(reverse("smtp_settings:create"), _form_data(bounce_domain="bounces.example.test"))
    assert SmtpServer.objects.get().bounce_domain == "bounces.example.test"
    page = admin_client.get(reverse("smtp_settings:edit", args=[SmtpServer.objects.get().pk])).content.decode()
    assert 'value="bounces.example.test"' in page


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
        ({"rate_limit": "-1"}, "Rate limit (msg/s)"),
        ({"rate_limit": "1e999"}, "Rate limit (msg/s)"),  # infinity
        ({"rate_limit": "nan"}, "Rate limit (msg/s)"),
        ({"rate_limit": "0.000000001"}, "Rate limit (msg/s)"),  # a turn every 31 years: a typo
        ({"rate_per_minute": "-30"}, "Rate limit (per minute)"),
        ({"rate_per_minute": "thirty"}, "Rate limit (per minute)"),
        ({"rate_per_minute": "0.5"}, "Rate limit (per minute)"),
        ({"rate_counts": "bytes"}, "Rates count"),
        ({"quota_per_hour": "-1"}, "Quota per hour"),
        ({"quota_per_day": "99999999999999999999"}, "Quota per day"),
        ({"quota_per_day": "9" * 5000}, "Quota per day"),  # more digits than Python converts
        ({"quota_per_day": ""}, "Quota per day"),
        ({"quota_counts": ""}, "Quotas count"),
        ({"bounce_domain": "bounces.example.test\r\nRCPT TO:<x@y>"}, "Bounce domain"),
        ({"bounce_domain": "not a domain"}, "Bounce domain"),
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


@pytest.mark.parametrize("value", ["-3", "0", "1001", "ten", "2.5"])
def test_max_conns_says_the_range_its_help_gives_for_any_value_outside_it(admin_client, value):
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(max_conns=value))

    content = response.content.decode()
    assert "Most simultaneous connections to this server, 1–1,000" in content
    assert content.count("Max. connections: Enter a whole number from 1 to 1,000.") == 1  # beside the field
    assert ">Max. connections</a>: Enter a whole number from 1 to 1,000.</li>" in content  # in the summary
    assert SmtpServer.objects.count() == 0


def _number_fields() -> list[tuple[str, str, str]]:
    """Each number field of the server form: its name, its help and the message the form gives."""
    form = SmtpServerForm()
    return [
        (name, str(field.help_text), field.error_messages["min_value"])
        for name, field in form.fields.items()
        if isinstance(field, forms.IntegerField | forms.FloatField)
    ]


def test_every_number_field_of_the_server_form_says_the_range_its_help_gives():
    fields = _number_fields()
    assert len(fields) == 13
    for name, help_text, message in fields:
        low, high = re.search(r"from ([\d.,]+) to ([\d,]+)\b", message).groups()
        assert f"{low}–{high}" in help_text, (name, help_text, message)


@pytest.mark.parametrize("name", [name for name, _, _ in _number_fields()])
def test_a_number_field_gives_one_message_below_above_and_for_no_number(admin_client, name):
    message = SmtpServerForm().fields[name].error_messages["min_value"]
    kind = {"kind": "esp", "esp": "postmark", "api_key": "k"} if name == "max_batch" else {}
    for value in ["-3", "-0.0005" if name == "rate_limit" else "-1", "100000001", "1e999", "x"]:
        response = admin_client.post(reverse("smtp_settings:create"), _form_data(**kind, **{name: value}))
        errors = response.context["form"].errors
        assert errors[name] == [message], (name, value)
    assert SmtpServer.objects.count() == 0


def test_the_error_summary_follows_the_order_of_the_page(admin_client):
    wrong = {"name": "", "port": "0", "password": "", "auth_protocol": "kerberos", "max_conns": "0"}
    wrong |= {"send_timeout": "0", "quota_per_day": "-1", "custom_headers_name": ["Bcc"], "helo_hostname": "a b"}
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(**wrong))

    content = response.content.decode()
    summary = content[content.index('class="error-summary"') : content.index("</ul>")]
    listed = re.findall(r'<a href="#(id_\w+)"', summary)
    on_the_page = [match for match in re.findall(r'id="(id_\w+)"', content) if match in listed]
    assert listed == list(dict.fromkeys(on_the_page))
    assert listed[0] == "id_name" and listed[-1] == "id_custom_headers" and len(listed) == 8


def test_only_the_wrong_input_of_a_custom_header_row_is_marked(admin_client):
    """A wrong name marks the name, not the value beside it (and the other way round); blank rows never."""
    headers = {
        "custom_headers_name": ["X-Fine", "Bcc", "X-Bad Header:", "X-Two-Lines", "", ""],
        "custom_headers_value": ["1", "x@example.test", "", "a\r\nb", "", ""],
    }
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(**headers))

    content = response.content.decode()
    marked = re.findall(
        r'<input type="text" name="custom_headers_(name|value)" value="([^"]*)"[^>]*?( aria-invalid="true")?>', content
    )
    assert marked == [
        ("name", "X-Fine", ""), ("value", "1", ""),
        ("name", "Bcc", ' aria-invalid="true"'), ("value", "x@example.test", ""),
        ("name", "X-Bad Header:", ' aria-invalid="true"'), ("value", "", ""),
        ("name", "X-Two-Lines", ""), ("value", "a\r\nb", ' aria-invalid="true"'),
        ("name", "", ""), ("value", "", ""),
        ("name", "", ""), ("value", "", ""),
    ]  # fmt: skip
    assert "Custom headers</a>: Header Bcc is set by Relaydeck itself" in content


def test_each_wrong_custom_header_has_its_own_message(admin_client):
    headers = {"custom_headers_name": ["Bcc", "X-Ok", "To"], "custom_headers_value": ["x", "a\r\nb", "y"]}
    response = admin_client.post(reverse("smtp_settings:create"), _form_data(**headers))

    assert response.context["form"].errors["custom_headers"] == [
        "Header Bcc is set by Relaydeck itself and cannot be overridden.",
        "The value of header X-Ok must be one line of text: remove the line break or control character U+000D.",
        "Header To is set by Relaydeck itself and cannot be overridden.",
    ]


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


def _selected(content: str, name: str) -> str:
    select = re.search(rf'<select name="{name}".*?</select>', content, re.S).group(0)
    return re.search(r'<option value="([^"]*)" selected>', select).group(1)


@pytest.mark.parametrize(
    "preset, rates, quotas, documented",
    [
        ("ses", ("14", "0", "recipients"), ("0", "50000", "recipients"), "both counted in recipients"),
        ("microsoft365", ("0", "30", "messages"), ("0", "10000", "recipients"), "10,000 recipients a day"),
        ("google", ("1", "0", "messages"), ("0", "2000", "messages"), "2,000 messages a day"),
    ],
)
def test_presets_fill_the_documented_rates_and_quotas(admin_client, preset, rates, quotas, documented):
    for headers in ({}, HTMX):  # the page, and the form alone when a preset button swaps it in
        content = admin_client.get(reverse("smtp_settings:create"), {"preset": preset}, **headers).content.decode()
        rate_limit, per_minute, rate_counts = rates
        quota_per_hour, quota_per_day, quota_counts = quotas
        assert f'name="rate_limit" value="{rate_limit}"' in content
        assert f'name="rate_per_minute" value="{per_minute}"' in content
        assert f'name="quota_per_hour" value="{quota_per_hour}"' in content
        assert f'name="quota_per_day" value="{quota_per_day}"' in content
        assert (_selected(content, "rate_counts"), _selected(content, "quota_counts")) == (rate_counts, quota_counts)
        assert documented in content


def _checked_kinds(content: str) -> list[str]:
    return re.findall(r'<input type="radio" name="kind" value="(\w+)"[^>]*\bchecked\b', content)


def test_a_new_entry_sends_through_smtp_until_told_otherwise(admin_client):
    """With no "Sends through" ticked, the page shows the ESP fields beside the SMTP ones."""
    create = reverse("smtp_settings:create")
    assert _checked_kinds(admin_client.get(create).content.decode()) == ["smtp"]
    for preset in PRESETS:
        for headers in ({}, HTMX):  # the page, and the form alone when a preset button swaps it in
            content = admin_client.get(create, {"preset": preset.key}, **headers).content.decode()
            assert _checked_kinds(content) == ["smtp"], preset.key
    esp = SmtpServer.objects.create(name="Postmark", kind=SmtpServer.Kind.ESP, esp="postmark", host="", port=443)
    edit = admin_client.get(reverse("smtp_settings:edit", args=[esp.pk])).content.decode()
    assert _checked_kinds(edit) == ["esp"]


def test_every_preset_saves_as_it_is_filled_in(admin_client):
    for preset in PRESETS:
        values = {"name": preset.label, "username": "me@example.test", "password": SECRET} | preset.initial()
        response = admin_client.post(reverse("smtp_settings:create"), _form_data(**values))
        assert response.status_code == 302, (preset.key, response.content.decode()[:3000])
        saved = SmtpServer.objects.get(name=preset.label)
        assert {key: getattr(saved, key) for key in preset.limits} == preset.limits, preset.key


def test_the_form_groups_rates_and_quotas_with_their_help(admin_client):
    content = admin_client.get(reverse("smtp_settings:create")).content.decode()
    rates, quotas = content.index("<legend>Rates</legend>"), content.index("<legend>Quotas</legend>")
    for name in ("rate_limit", "rate_per_minute", "rate_counts"):
        assert rates < content.index(f'name="{name}"') < quotas, name
    for name in ("quota_per_hour", "quota_per_day", "quota_counts"):
        assert quotas < content.index(f'name="{name}"'), name
    assert "Messages per minute across all connections, 0–10,000,000 (Microsoft 365: 30)." in content
    assert "What the hourly and daily quotas count (Amazon SES and Microsoft 365 count recipients)." in content


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


def test_delete_with_htmx_loads_the_list(admin_client, server):
    response = admin_client.post(reverse("smtp_settings:delete", args=[server.pk]), **HTMX)
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("smtp_settings:list")
    assert SmtpServer.objects.count() == 0


def test_unknown_server_is_404(admin_client):
    assert admin_client.get(reverse("smtp_settings:edit", args=[999])).status_code == 404
    assert admin_client.post(reverse("smtp_settings:toggle", args=[999])).status_code == 404


def test_admin_registers_servers_with_a_write_only_password(admin_client, server):
    response = admin_client.get(reverse("admin:smtp_settings_smtpserver_change", args=[server.pk]))
    assert response.status_code == 200
    assert 'type="password"' in response.content.decode()


def _card_text(client, server) -> str:
    content = client.get(reverse("smtp_settings:list")).content.decode()
    card = re.search(rf'<article class="card[^"]*" id="server-{server.pk}">.*?</article>', content, re.S)[0]
    return " ".join(re.sub(r"<[^>]+>", " ", card).split())


def test_the_card_says_the_connection_security_and_login_in_words(viewer_client, make_server):
    plain = make_server(host="mx.example.com", port=25, tls="none", auth_protocol="none")
    secured = make_server(host="smtp.example.com", port=587, tls="starttls", auth_protocol="login", username="u")

    assert "mx.example.com:25 · plain text, no TLS · no login" in _card_text(viewer_client, plain)
    assert "None" not in _card_text(viewer_client, plain)
    assert "smtp.example.com:587 · STARTTLS · login LOGIN as u" in _card_text(viewer_client, secured)


def test_the_cards_limits_have_thousands_separators(viewer_client, make_server):
    server = make_server(max_conns=1_000, max_msgs_per_conn=10_000)
    assert "Connections 1,000 Msgs/conn 10,000" in _card_text(viewer_client, server)


def test_learned_limits_show_on_the_card_and_apply_in_one_click(admin_client, server):
    server.record_learned("msgs_per_conn", 45)
    server.record_learned("max_conns", 5)
    content = admin_client.get(reverse("smtp_settings:list")).content.decode()
    assert "45 messages per connection" in content and "5 connections" in content
    card = _card_text(admin_client, server)
    assert re.search(
        r"45 messages per connection \(\d{4}-\d\d-\d\d \d\d:\d\d\): kept 10% below the fewest messages the server "
        r"took in a session before closing it with a 421",
        card,
    )
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
