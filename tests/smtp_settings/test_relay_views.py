"""The relay page: relay logins, API tokens and the default route, managed by admins and read by
everyone. A password or key is shown once, in the answer that made it, and kept hashed."""

import hashlib
import json
import re

import pytest
from django.urls import reverse

from project.roles import Role
from smtp_settings.models import ApiToken, OutboxMessage, RelayCredential, RelayRoute

pytestmark = pytest.mark.django_db

INDEX = reverse("access:index")
HTMX = {"HTTP_HX_REQUEST": "true"}
TYPED = "correct horse battery staple"


def make_credential(name="forge", username="forge", password=TYPED, servers=()) -> RelayCredential:
    credential = RelayCredential(name=name, username=username)
    credential.set_password(password)
    credential.save()
    credential.servers.set(servers)
    return credential


def everything() -> tuple:
    return (
        list(RelayCredential.objects.values_list("pk", "name", "username", "password_hash", "enabled")),
        list(ApiToken.objects.values_list("pk", "name", "enabled")),
        list(RelayRoute.servers.through.objects.values_list("smtpserver_id")),
    )


# -- who may see and do what --


def test_the_relay_page_needs_a_login(client):
    credential, token = make_credential(), ApiToken.issue("shop")[0]
    urls = [
        INDEX,
        reverse("access:credential_create"),
        reverse("access:credential_edit", args=[credential.pk]),
        reverse("access:credential_delete", args=[credential.pk]),
        reverse("access:token_create"),
        reverse("access:token_revoke", args=[token.pk]),
    ]
    before = everything()
    for url in urls:
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    assert client.post(reverse("access:route")).status_code == 302
    assert everything() == before


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SENDER])
def test_viewers_and_senders_read_the_page_but_change_nothing(login_as, make_server, role):
    browser = login_as(role)
    credential, token = make_credential(servers=[make_server(name="SES")]), ApiToken.issue("shop")[0]

    page = browser.get(INDEX).content.decode()

    assert "forge" in page and "SES" in page and f"{token.prefix}…" in page
    for action in ("credential_create", "token_create", "route"):
        assert reverse(f"access:{action}") not in page
    before = everything()
    posts = [
        (reverse("access:credential_create"), {"name": "x", "username": "x", "password": TYPED}),
        (reverse("access:credential_edit", args=[credential.pk]), {"name": "x", "username": "x"}),
        (reverse("access:credential_delete", args=[credential.pk]), {}),
        (reverse("access:token_create"), {"name": "x"}),
        (reverse("access:token_revoke", args=[token.pk]), {}),
        (reverse("access:route"), {"servers": []}),
    ]
    for url, data in posts:
        response = browser.post(url, data)
        assert response.status_code == 403 and "This needs the admin role" in response.content.decode(), url
    assert everything() == before


def test_the_page_says_how_to_reach_the_relay(admin_client, settings):
    settings.RELAY_LISTEN = "0.0.0.0:2587"
    settings.RELAY_TRUSTED_NETWORKS = ["10.0.0.0/8", "fd00::/8"]
    settings.RELAY_TLS_CERT, settings.RELAY_TLS_KEY = "/etc/relay.pem", "/etc/relay.key"

    page = admin_client.get(INDEX).content.decode()

    assert "Point your application's SMTP settings at Relaydeck" in page
    assert "<dt>SMTP host</dt><dd><code>0.0.0.0</code>" in page and "<dt>Port</dt><dd><code>2587</code>" in page
    assert "<code>10.0.0.0/8</code>, <code>fd00::/8</code>" in page
    assert "<dt>Security</dt><dd>STARTTLS</dd>" in page


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("[::1]:2587", "::1", "2587"), ("127.0.0.1:25", "127.0.0.1", "25"), ("2587", "2587", "")],
)
def test_the_page_reads_relay_listen_as_the_relay_does(admin_client, settings, listen, host, port):
    settings.RELAY_LISTEN = listen
    page = admin_client.get(INDEX).content.decode()
    assert f"<dt>SMTP host</dt><dd><code>{host}</code>" in page and f"<dt>Port</dt><dd><code>{port}</code>" in page


def test_the_page_says_when_starttls_is_not_configured_and_nobody_is_trusted(admin_client, settings):
    settings.RELAY_TRUSTED_NETWORKS, settings.RELAY_TLS_CERT = [], ""
    page = admin_client.get(INDEX).content.decode()
    assert "STARTTLS is not configured: set RELAY_TLS_CERT and RELAY_TLS_KEY" in page
    assert "none: every client logs in" in page


# -- relay logins --


def test_a_typed_password_is_kept_hashed_and_never_shown(admin_client, make_server):
    server = make_server(name="SES")
    response = admin_client.post(
        reverse("access:credential_create"),
        {"name": "Forge", "username": "forge@example.test", "password": TYPED, "servers": [server.pk], "enabled": "on"},
    )

    assert response.status_code == 302 and response.url == INDEX
    credential = RelayCredential.objects.get()
    assert credential.check_password(TYPED) and TYPED not in credential.password_hash
    assert list(credential.servers.all()) == [server]
    page = admin_client.get(INDEX).content.decode()
    assert "Relay login “Forge” added." in page and TYPED not in page
    assert TYPED not in admin_client.get(reverse("access:credential_edit", args=[credential.pk])).content.decode()


def test_a_blank_password_is_made_up_and_shown_once(admin_client, settings):
    settings.RELAY_LISTEN = "127.0.0.1:2587"
    response = admin_client.post(reverse("access:credential_create"), {"name": "Chat", "username": "chat"})

    assert response.status_code == 201
    assert "no-store" in response.headers["Cache-Control"]
    page = response.content.decode()
    password = re.search(r'<p class="secret" id="secret">([^<]+)</p>', page).group(1)
    assert len(password) >= 24
    credential = RelayCredential.objects.get()
    assert credential.check_password(password) and password not in credential.password_hash
    assert "username <code>chat</code>" in page and "port <code>2587</code>" in page
    assert password not in admin_client.get(INDEX).content.decode()
    assert password not in admin_client.get(reverse("access:credential_edit", args=[credential.pk])).content.decode()


@pytest.mark.parametrize(
    ("data", "label", "says"),
    [
        ({"name": "", "username": "chat"}, "Name", "This field is required."),
        ({"name": "Chat", "username": "chat bot"}, "Username", "Use letters, digits and . _ @ + - only."),
        ({"name": "Chat", "username": "forge"}, "Username", "already exists"),
        ({"name": "forge", "username": "chat"}, "Name", "already exists"),
        ({"name": "Chat", "username": "chat", "password": "short"}, "Password", "at least 12 characters"),
        ({"name": "Chat", "username": "chat", "servers": ["999"]}, "Servers", "Select a valid choice"),
    ],
)
def test_a_bad_login_form_names_the_field_and_saves_nothing(admin_client, data, label, says):
    make_credential()
    before = everything()
    response = admin_client.post(reverse("access:credential_create"), data)
    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(rf"<small class=\"error\">{label}: [^<]*{re.escape(says)}", page), page
    assert everything() == before


def test_editing_keeps_the_password_unless_a_new_one_is_typed(admin_client, make_server):
    credential = make_credential()
    url = reverse("access:credential_edit", args=[credential.pk])
    server = make_server(name="Exchange")

    kept = admin_client.post(url, {"name": "Forge", "username": "forge", "servers": [server.pk]})
    credential.refresh_from_db()
    assert kept.status_code == 302 and credential.check_password(TYPED) and not credential.enabled
    assert list(credential.servers.all()) == [server] and credential.name == "Forge"

    admin_client.post(url, {"name": "Forge", "username": "forge", "password": "a new long password", "enabled": "on"})
    credential.refresh_from_db()
    assert credential.check_password("a new long password") and credential.enabled


def test_deleting_a_login_asks_first(admin_client):
    credential = make_credential()
    url = reverse("access:credential_delete", args=[credential.pk])

    asked = admin_client.get(url)
    assert asked.status_code == 200 and "Delete the relay login “forge”?" in asked.content.decode()
    assert RelayCredential.objects.exists()

    deleted = admin_client.post(url)
    assert deleted.status_code == 302 and deleted.url == INDEX and not RelayCredential.objects.exists()


def test_deleting_a_login_with_htmx_removes_its_row(admin_client):
    credential = make_credential()
    page = admin_client.get(INDEX).content.decode()
    assert f'hx-target="#credential-{credential.pk}"' in page and f'<tr id="credential-{credential.pk}">' in page

    response = admin_client.post(reverse("access:credential_delete", args=[credential.pk]), **HTMX)

    assert response.status_code == 200 and response.content == b""
    assert not RelayCredential.objects.exists()


# -- API tokens --


def test_a_new_tokens_key_is_shown_once_works_once_and_only_its_hash_is_kept(admin_client, client, make_server):
    server = make_server(name="SES")
    response = admin_client.post(reverse("access:token_create"), {"name": "Shop", "servers": [server.pk]})

    assert response.status_code == 201 and "no-store" in response.headers["Cache-Control"]
    key = re.search(r'<p class="secret" id="secret">([^<]+)</p>', response.content.decode()).group(1)
    token = ApiToken.objects.get()
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest() and list(token.servers.all()) == [server]
    assert key not in admin_client.get(INDEX).content.decode()
    sent = client.post(
        reverse("api:messages"),
        json.dumps({"to": "a@example.test", "from": "shop@example.test", "subject": "Hi", "text": "Hi"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert sent.status_code == 201 and OutboxMessage.objects.get().route == [server.pk]


def test_a_token_name_is_unique(admin_client):
    ApiToken.issue("Shop")
    response = admin_client.post(reverse("access:token_create"), {"name": "Shop"})
    assert response.status_code == 200 and '<small class="error">Name: Api token with this Name already exists.' in (
        response.content.decode()
    )
    assert ApiToken.objects.count() == 1


def test_revoking_a_token_asks_first_and_keeps_it_listed_as_revoked(admin_client, client):
    token, key = ApiToken.issue("Shop")
    url = reverse("access:token_revoke", args=[token.pk])

    asked = admin_client.get(url)
    assert "Revoke the API token “Shop”?" in asked.content.decode() and ApiToken.objects.get().enabled

    revoked = admin_client.post(url)

    assert revoked.status_code == 302 and not ApiToken.objects.get().enabled
    page = admin_client.get(INDEX).content.decode()
    assert "API token “Shop” revoked." in page and "Revoked" in page and url not in page
    refused = client.get(reverse("api:message", args=[1]), HTTP_AUTHORIZATION=f"Bearer {key}")
    assert refused.status_code == 401


def test_revoking_a_token_with_htmx_returns_its_row(admin_client):
    token = ApiToken.issue("Shop")[0]
    response = admin_client.post(reverse("access:token_revoke", args=[token.pk]), **HTMX)
    row = response.content.decode()
    assert row.lstrip().startswith(f'<tr id="token-{token.pk}">') and "Revoked" in row and "<html" not in row
    assert not ApiToken.objects.get().enabled


# -- the default route --


def test_the_default_route_is_the_first_enabled_server_until_one_is_chosen(admin_client, make_server):
    make_server(name="Alpha", enabled=False)
    make_server(name="Beta")
    page = admin_client.get(INDEX).content.decode()
    assert "goes out through\n    the first enabled server (now Beta)." in page


def test_saving_the_default_route(admin_client, make_server):
    ses, exchange = make_server(name="SES"), make_server(name="Exchange")

    response = admin_client.post(reverse("access:route"), {"servers": [ses.pk, exchange.pk]})

    assert response.status_code == 302 and response.url == INDEX
    assert set(RelayRoute.get().servers.all()) == {ses, exchange}
    assert "Default route saved." in admin_client.get(INDEX).content.decode()

    cleared = admin_client.post(reverse("access:route"), {}, **HTMX)
    section = cleared.content.decode()
    assert cleared.status_code == 200 and 'id="relay-route"' in section and "<html" not in section
    assert "Saved." in section and "the first enabled server (now Exchange)" in section
    assert not RelayRoute.get().servers.exists()


def test_a_bad_route_names_the_field(admin_client):
    response = admin_client.post(reverse("access:route"), {"servers": ["999"]})
    assert response.status_code == 400
    assert '<small class="error">Servers: Select a valid choice.' in response.content.decode()


def test_the_route_refuses_get(admin_client):
    assert admin_client.get(reverse("access:route")).status_code == 405
