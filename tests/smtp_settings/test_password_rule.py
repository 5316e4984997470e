"""A stored SMTP password is only ever sent to the host, port and username it was stored with:
whoever points a server elsewhere types the password again, on save and on "Test connection".
Each test asserts on the AUTH attempts real servers received."""

import pytest
from django.urls import reverse

from smtp_settings.models import SmtpServer
from tests.smtp_settings.test_views import HTMX, SECRET, _form_data

pytestmark = pytest.mark.django_db

RETYPE = "Type the password again: the host, port, username, TLS or auth protocol changed"


@pytest.fixture
def stored(smtp_sandbox, make_server):
    """A server whose password works, and the real server behind it."""
    sandbox = smtp_sandbox(auth="relay:" + SECRET)
    server = make_server(port=sandbox.port, auth_protocol="plain", username="relay", password=SECRET)
    return server, sandbox


@pytest.fixture
def elsewhere(stored, smtp_sandbox):
    """Where an edit could point the server instead: another host on the same port, another
    port on the same host, or the same server under another username."""
    sandbox = stored[1]
    other_host = smtp_sandbox(host="127.0.0.2", port=sandbox.port, auth="relay:anything")
    other_port = smtp_sandbox(auth="relay:anything")
    return {
        "host": (other_host, {"host": "127.0.0.2"}),
        "port": (other_port, {"port": str(other_port.port)}),
        "username": (sandbox, {"username": "someone-else"}),
        "auth_protocol": (sandbox, {"auth_protocol": "login"}),
        "tls_skip_verify": (sandbox, {"tls_skip_verify": "on"}),
    }


def _edit_data(server: SmtpServer, **overrides) -> dict:
    endpoint = {"host": server.host, "port": str(server.port), "username": server.username}
    return _form_data(tls="none", auth_protocol="plain", password="", **endpoint) | overrides


def _secrets_received(*sandboxes) -> list:
    return [attempt for sandbox in sandboxes for attempt in sandbox.auth_attempts if attempt and SECRET in attempt]


CHANGES = ["host", "port", "username", "auth_protocol", "tls_skip_verify"]


@pytest.mark.parametrize("changed", CHANGES)
def test_saving_a_new_destination_without_the_password_is_a_password_error(admin_client, stored, elsewhere, changed):
    server, _ = stored
    data = _edit_data(server, **elsewhere[changed][1])
    response = admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), data)
    assert response.status_code == 200
    assert f"Password</a>: {RETYPE}" in response.content.decode()
    assert SmtpServer.objects.get(pk=server.pk).host == "127.0.0.1"  # nothing saved


@pytest.mark.parametrize("changed", CHANGES)
def test_testing_a_new_destination_never_sends_the_stored_password(admin_client, stored, elsewhere, changed):
    server, sandbox = stored
    target, overrides = elsewhere[changed]
    data = _edit_data(server, server_id=str(server.pk), to_email="me@example.test", **overrides)
    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)
    assert _secrets_received(sandbox, target) == [] and target.received == []
    content = response.content.decode()
    assert f"Password: {RETYPE}" in content
    assert "Connection works" not in content


def test_testing_the_stored_destination_sends_the_stored_password_there(admin_client, stored, elsewhere):
    server, sandbox = stored
    data = _edit_data(server, server_id=str(server.pk))
    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)
    assert "Connection works" in response.content.decode()
    assert sandbox.auth_attempts == [("relay", SECRET)]


def test_a_new_destination_works_with_the_password_typed_again(admin_client, stored, elsewhere):
    server, _ = stored
    target, overrides = elsewhere["port"]
    data = _edit_data(server, server_id=str(server.pk), password="anything", **overrides)
    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)
    assert "Connection works" in response.content.decode()
    assert target.auth_attempts == [("relay", "anything")]
    response = admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), data)
    assert response.status_code == 302
    server.refresh_from_db()
    assert (server.port, server.password) == (target.port, "anything")


def test_a_test_without_auth_goes_ahead_and_sends_no_password(admin_client, stored, smtp_sandbox):
    server, _ = stored
    open_relay = smtp_sandbox()  # no auth: a relay that trusts this host
    data = _edit_data(server, server_id=str(server.pk), auth_protocol="none", port=str(open_relay.port))
    response = admin_client.post(reverse("smtp_settings:form_test"), data, **HTMX)
    assert "Connection works" in response.content.decode()
    assert open_relay.auth_attempts == [] and open_relay.summary()["sessions"] == 1


def test_removing_the_stored_password_lets_a_new_destination_be_saved(admin_client, stored):
    server, _ = stored
    data = _edit_data(server, host="127.0.0.3", clear_password="on")
    assert admin_client.post(reverse("smtp_settings:edit", args=[server.pk]), data).status_code == 302
    server.refresh_from_db()
    assert (server.host, server.password) == ("127.0.0.3", "")


def test_the_django_admin_keeps_the_same_rule(admin_client, stored):
    server, _ = stored
    url = reverse("admin:smtp_settings_smtpserver_change", args=[server.pk])
    response = admin_client.post(url, _edit_data(server, host="127.0.0.2"))
    assert response.status_code == 200
    assert RETYPE in response.content.decode()
    assert SmtpServer.objects.get(pk=server.pk).host == "127.0.0.1"


def test_the_model_rule(stored):
    server, _ = stored
    where = {name: getattr(server, name) for name in SmtpServer.PASSWORD_BINDING}
    assert server.password_may_go_to(**where)
    for changed in [{"host": "127.0.0.2"}, {"port": server.port + 1}, {"username": "other"}, {"tls": "starttls"}]:
        assert not server.password_may_go_to(**(where | changed))
    assert not server.password_may_go_to(**(where | {"tls_skip_verify": True}))
    assert not server.password_may_go_to(**(where | {"auth_protocol": "login"}))
    assert SmtpServer(host="a.test", port=25).password_may_go_to(**(where | {"host": "b.test"}))  # nothing to leak
