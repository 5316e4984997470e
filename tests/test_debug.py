"""The debug page (and the error e-mail made the same way) never shows a secret, DEBUG or not."""

import base64
import socket
import threading

import pytest
from django.db.models.signals import pre_save
from django.test import Client, RequestFactory
from django.urls import reverse
from django.views.debug import technical_500_response

from smtp_settings.connection import Deadline, open_session
from smtp_settings.models import SmtpServer
from smtp_settings.pool import ServerConfig

pytestmark = pytest.mark.django_db

USERNAME = "relay@example.test"


@pytest.fixture(autouse=True)
def _debug_on(settings):
    settings.DEBUG = True
    settings.DEBUG_PAGES = True  # Django's own pages, not the styled ones (tests/test_error_pages.py)


@pytest.fixture
def hangs_up_at_auth():
    """An SMTP server on a loopback port that offers AUTH PLAIN and hangs up when it is used."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"220 hostile.test ready\r\n")
            for line in lines:
                if line.upper().startswith(b"EHLO"):
                    connection.sendall(b"250-hostile.test\r\n250 AUTH PLAIN\r\n")
                elif line.upper().startswith(b"AUTH"):
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(timeout=5)


def _shown_anywhere(page: str, password: str) -> list[str]:
    """The forms in which `password` appears on `page`: as text, in a bytes repr, or in base64
    as AUTH PLAIN and AUTH LOGIN send it."""
    forms = {
        "text": password,
        "bytes": repr(password.encode())[2:-1],
        "AUTH PLAIN": base64.b64encode(f"\0{USERNAME}\0{password}".encode()).decode(),
        "AUTH LOGIN": base64.b64encode(password.encode()).decode(),
    }
    return [name for name, form in forms.items() if form in page]


@pytest.mark.parametrize("plaintext", ["S3cret-pässword", "S3cret-password"], ids=["non-ascii", "ascii"])
def test_a_failure_during_auth_shows_neither_the_password_nor_the_credentials_smtplib_built(
    make_server, hangs_up_at_auth, plaintext
):
    stored = make_server(port=hangs_up_at_auth, auth_protocol="plain", username=USERNAME, password=plaintext)
    config = ServerConfig.of(SmtpServer.objects.get(pk=stored.pk))  # decrypted, as the pool holds it
    request = RequestFactory().get("/")

    # smtplib fails either way with the credentials in its locals: encoding a non-ASCII password
    # (UnicodeEncodeError), or sending the ASCII one's AUTH PLAIN to a server that hangs up.
    with pytest.raises(Exception) as raised:
        open_session(config, Deadline(5))
    page = technical_500_response(request, raised.type, raised.value, raised.tb).content.decode()

    assert "initial_response" in page  # smtplib's AUTH frame is on the page, its locals hidden
    assert _shown_anywhere(page, plaintext) == []


def test_a_server_config_does_not_show_its_password(make_server):
    config = ServerConfig.of(make_server(auth_protocol="plain", username=USERNAME, password="S3cret-pässword"))

    assert "S3cret" not in repr(config) and USERNAME in repr(config)


@pytest.mark.parametrize("url", ["smtp_settings:create", "smtp_settings:edit"])
def test_a_crash_in_a_server_view_shows_no_posted_password(admin_user, make_server, url):
    server = make_server(name="Relay")
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    data = {
        **{"name": "Relay", "host": "127.0.0.1", "port": "25", "tls": "none", "auth_protocol": "plain"},
        **{"username": USERNAME, "password": "S3cret-pässword", "max_conns": "1", "max_msgs_per_conn": "0"},
        **{"retries": "0", "idle_timeout": "5", "max_conn_age": "0", "wait_timeout": "5", "send_timeout": "5"},
        **{"rate_limit": "0", "rate_per_minute": "0", "rate_counts": "messages"},
        **{"quota_per_hour": "0", "quota_per_day": "0", "quota_counts": "messages"},
    }

    def database_fails(**kwargs):
        raise RuntimeError("the database went away")

    pre_save.connect(database_fails, sender=SmtpServer, dispatch_uid="database_fails")
    try:
        if url.endswith("create"):
            response = client.post(reverse(url), data | {"name": "Another relay"})
        else:
            response = client.post(reverse(url, args=[server.pk]), data)
    finally:
        pre_save.disconnect(sender=SmtpServer, dispatch_uid="database_fails")

    page = response.content.decode()
    assert response.status_code == 500 and "the database went away" in page
    assert "password" in page  # the POST section lists the field, without its value
    assert _shown_anywhere(page, "S3cret-pässword") == []
