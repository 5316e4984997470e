import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import override_settings

from smtp_settings.models import OutboxMessage, SmtpServer

pytestmark = pytest.mark.django_db


def _errors(**fields) -> dict:
    server = SmtpServer(**({"name": "s", "host": "smtp.example.test"} | fields))
    with pytest.raises(ValidationError) as caught:
        server.full_clean()
    return caught.value.message_dict


def test_defaults_match_listmonk_style_limits():
    server = SmtpServer(name="s", host="smtp.example.test")
    server.full_clean()
    assert (server.port, server.tls, server.auth_protocol) == (587, "starttls", "login")
    assert (server.max_conns, server.max_msgs_per_conn, server.retries) == (10, 0, 2)
    assert (server.idle_timeout, server.max_conn_age, server.wait_timeout, server.send_timeout) == (15, 0, 5, 30)
    assert server.rate_limit == 0
    assert server.custom_headers == []
    assert server.enabled and not server.tls_skip_verify


@pytest.mark.parametrize("port", [0, 65536, 70000])
def test_port_must_be_between_1_and_65535(port):
    assert "port" in _errors(port=port)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_conns", 0),
        ("max_conns", 1001),
        ("max_msgs_per_conn", 1_000_001),
        ("retries", 101),
        ("send_timeout", 0),
        ("rate_limit", -1),
    ],
)
def test_limits_out_of_range_are_rejected(field, value):
    assert field in _errors(**{field: value})


def test_unknown_tls_mode_is_rejected():
    assert "tls" in _errors(tls="tls1.0")


def test_host_must_be_a_host_name_or_address():
    assert "host" in _errors(host="smtp example.com")
    for host in ("smtp.example.com", "127.0.0.1", "::1", "localhost"):
        SmtpServer(name="s", host=host).full_clean()


@pytest.mark.parametrize(
    "headers",
    [
        [["X-Bad:Name", "v"]],
        [["X Bad", "v"]],
        [["X-Bad\r\nBcc", "v"]],
        [["X-Ok", "line\r\nBcc: victim@example.test"]],
        [["Subject", "overrides the campaign"]],
        [["X-Only-Name"]],
        "X-Not: a list",
    ],
)
def test_invalid_custom_headers_are_rejected(headers):
    assert "custom_headers" in _errors(custom_headers=headers)


def test_valid_custom_headers_are_accepted():
    SmtpServer(
        name="s", host="h.test", custom_headers=[["X-Mailer", "Relaydeck"], ["X-SES-CONFIGURATION-SET", "m"]]
    ).full_clean()


def test_duplicate_name_is_rejected():
    SmtpServer.objects.create(name="Primary", host="a.test")
    assert "name" in _errors(name="Primary")


def _stored_password(server: SmtpServer) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM smtp_settings_smtpserver WHERE id = %s", [server.pk])
        return cursor.fetchone()[0]


def test_password_is_encrypted_at_rest_on_every_save_path():
    created = SmtpServer.objects.create(name="a", host="a.test", password="s3cret-Pa55")
    SmtpServer.objects.bulk_create([SmtpServer(name="b", host="b.test", password="s3cret-Pa55")])
    for server in SmtpServer.objects.all():
        stored = _stored_password(server)
        assert "s3cret" not in stored
        assert stored.startswith("gAAAA")  # a Fernet token
        assert server.password == "s3cret-Pa55"
    SmtpServer.objects.filter(pk=created.pk).update(password="n3w-Pa55")
    assert "n3w" not in _stored_password(created)
    assert SmtpServer.objects.get(pk=created.pk).password == "n3w-Pa55"


def test_password_survives_a_secret_key_rotation_with_fallbacks(settings):
    server = SmtpServer.objects.create(name="a", host="a.test", password="s3cret")
    old_key = settings.SECRET_KEY
    with override_settings(SECRET_KEY="a-new-secret-key-" * 3, SECRET_KEY_FALLBACKS=[old_key]):
        assert SmtpServer.objects.get(pk=server.pk).password == "s3cret"
    with override_settings(SECRET_KEY="a-new-secret-key-" * 3, SECRET_KEY_FALLBACKS=[]):
        assert SmtpServer.objects.get(pk=server.pk).password == ""


def test_an_outbox_messages_bytes_are_the_last_column_of_its_row():
    """SQLite reads a row's columns in order: up to 10 MB before the status would be overflow
    pages walked by every claim and count."""
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, OutboxMessage._meta.db_table)
    assert columns[-1].name == "data"
