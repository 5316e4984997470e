"""Settings come from the environment with safe defaults."""

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'engine': s.DATABASES['default']['ENGINE'], "
    "'broker': 'redis' if 'redis' in s.Q_CLUSTER else 'orm', 'hosts': s.ALLOWED_HOSTS}))"
)


def _clean_env(tmp_path) -> dict[str, str]:
    """This process's environment without the settings the tests choose, in a fresh var/."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")}
    return clean | {"DJANGO_SETTINGS_MODULE": "project.settings", "RELAYDECK_VAR_DIR": str(tmp_path)}


def _python(tmp_path, *args: str, **env) -> subprocess.CompletedProcess:
    """`python ARGS` in the project, with the environment cleaned and then `env` added."""
    command = [sys.executable, *args]
    return subprocess.run(command, cwd=ROOT, env=_clean_env(tmp_path) | env, capture_output=True, text=True, timeout=60)


def _settings_process(tmp_path, **env) -> subprocess.CompletedProcess:
    return _python(tmp_path, "-c", SHOW, **env)


def test_debug_off_refuses_to_start_without_a_secret_key(tmp_path):
    result = _settings_process(tmp_path, DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("a-production-secret-key-" * 3)
    result = _settings_process(tmp_path, DEBUG="0", SECRET_KEY_FILE=str(key_file), ALLOWED_HOSTS="mail.example.test")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hosts"] == ["mail.example.test"]


def test_development_key_is_generated_once_and_kept(tmp_path):
    assert _settings_process(tmp_path).returncode == 0
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    assert _settings_process(tmp_path).returncode == 0
    assert (tmp_path / "secret_key").read_text() == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_defaults_are_sqlite_and_the_orm_broker(tmp_path):
    shown = json.loads(_settings_process(tmp_path).stdout)
    assert shown["engine"] == "django.db.backends.sqlite3" and shown["broker"] == "orm"


def test_database_and_redis_urls_switch_to_postgresql_and_redis(tmp_path):
    result = _settings_process(
        tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    shown = json.loads(result.stdout)
    assert shown["engine"] == "django.db.backends.postgresql" and shown["broker"] == "redis"


def test_the_webhook_secret_and_signing_keys_come_from_the_environment(tmp_path):
    show = "import django, json; django.setup(); from django.conf import settings; print(json.dumps(settings.ANYMAIL))"
    assert json.loads(_python(tmp_path, "-c", show).stdout) == {"WEBHOOK_SECRET": []}  # webhooks off
    secret_file = tmp_path / "webhook_secret"
    secret_file.write_text("esp:new-secret,esp:old-secret\n")
    result = _python(
        tmp_path,
        "-c",
        show,
        ANYMAIL_WEBHOOK_SECRET_FILE=str(secret_file),
        ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY="key-1",
        ANYMAIL_POSTAL_WEBHOOK_KEY="",
    )
    assert json.loads(result.stdout) == {
        "WEBHOOK_SECRET": ["esp:new-secret", "esp:old-secret"],
        "MAILGUN_WEBHOOK_SIGNING_KEY": "key-1",
    }


def test_bad_boolean_is_a_clear_configuration_error(tmp_path):
    result = _settings_process(tmp_path, DEBUG="maybe")
    assert "DEBUG must be a boolean (1/0, true/false), not 'maybe'" in result.stderr


def test_relay_networks_and_certificate_are_checked(tmp_path):
    show = "import django; django.setup(); from django.conf import settings; print(settings.RELAY_TRUSTED_NETWORKS)"
    result = _python(tmp_path, "-c", show, RELAY_TRUSTED_NETWORKS="10.1.2.3/8, 2001:db8::1")
    assert result.stdout.strip() == "['10.0.0.0/8', '2001:db8::1/128']"
    result = _python(tmp_path, "-c", show, RELAY_TRUSTED_NETWORKS="10.0.0.0/8,intranet")
    assert "RELAY_TRUSTED_NETWORKS: 'intranet' does not appear to be an IPv4 or IPv6 network" in result.stderr
    result = _python(tmp_path, "-c", show, RELAY_TLS_CERT="/etc/relaydeck/relay.pem")
    assert "RELAY_TLS_CERT and RELAY_TLS_KEY are set together, or neither" in result.stderr


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 20_000


SQLITE_WRITER = """
import django, json, sys, time; django.setup()
from django.db import connection, transaction
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS hits (n INTEGER)")
    for n in range(40):
        # Read, then write: with deferred transactions the second writer's lock upgrade fails at once.
        with transaction.atomic():
            cursor.execute("SELECT count(*) FROM hits")
            time.sleep(0.002)
            cursor.execute("INSERT INTO hits VALUES (%s)", [n])
    cursor.execute("PRAGMA journal_mode")
    mode = cursor.fetchone()[0]
    cursor.execute("PRAGMA busy_timeout")
    print(json.dumps({"journal_mode": mode, "busy_timeout": cursor.fetchone()[0]}))
"""


def test_a_sqlite_database_url_keeps_wal_and_concurrent_writers_wait_their_turn(tmp_path):
    database = tmp_path / "x.sqlite3"
    env = _clean_env(tmp_path) | {"DATABASE_URL": f"sqlite:///{database}"}
    command = [sys.executable, "-c", SQLITE_WRITER]

    def start():
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # The first process turns the new file to WAL, as `migrate` does before any worker starts
    # (two processes converting one new file at the same instant can find it locked, busy
    # timeout or not); then two write at once.
    writers = [start()]
    results = [writers[0].communicate(timeout=60)]
    writers += [start(), start()]
    results += [writer.communicate(timeout=60) for writer in writers[1:]]

    assert [writer.returncode for writer in writers] == [0, 0, 0], [stderr.decode()[-500:] for _, stderr in results]
    assert [json.loads(stdout) for stdout, _ in results] == [{"journal_mode": "wal", "busy_timeout": 20_000}] * 3
    with sqlite3.connect(database) as check:
        assert check.execute("SELECT count(*) FROM hits").fetchone()[0] == 120


PRODUCTION = {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "mail.example.test"}


def test_production_settings_pass_check_deploy(tmp_path):
    result = _python(tmp_path, "manage.py", "check", "--deploy", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


REQUESTS = """
import django, json; django.setup()
from django.test import Client

def show(response):
    hsts = response.headers.get("Strict-Transport-Security")
    return [response.status_code, response.headers.get("Location"), hsts]

client = Client(HTTP_HOST="mail.example.test")
print(json.dumps({
    "http": show(client.get("/campaigns/")),
    "https": show(client.get("/campaigns/", secure=True)),
    "proxied https": show(client.get("/campaigns/", HTTP_X_FORWARDED_PROTO="https")),
    "proxied http": show(client.get("/campaigns/", HTTP_HOST="app:8000", HTTP_X_FORWARDED_HOST="mail.example.test")),
}))
"""


def _responses(tmp_path, **env) -> dict:
    result = _python(tmp_path, "-c", REQUESTS, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


HSTS = "max-age=31536000; includeSubDomains"
TO_HTTPS = [301, "https://mail.example.test/campaigns/", None]
TO_LOGIN = "/login/?next=/campaigns/"


def test_production_redirects_http_to_https_and_sends_hsts_over_https(tmp_path):
    shown = _responses(tmp_path, **PRODUCTION)

    assert shown["http"] == TO_HTTPS
    assert shown["https"] == [302, TO_LOGIN, HSTS]
    assert shown["proxied https"] == TO_HTTPS  # a client's X-Forwarded-Proto is not trusted by default


def test_behind_a_tls_proxy_its_forwarded_scheme_and_host_are_trusted(tmp_path):
    shown = _responses(tmp_path, **PRODUCTION, BEHIND_TLS_PROXY="1")

    assert shown["proxied https"] == [302, TO_LOGIN, HSTS]
    assert shown["proxied http"] == TO_HTTPS  # to the public host name, not the proxy's upstream


def test_https_settings_can_be_switched(tmp_path):
    preload = _responses(tmp_path, **PRODUCTION, SECURE_HSTS_PRELOAD="1", SECURE_HSTS_INCLUDE_SUBDOMAINS="0")
    assert preload["https"][2] == "max-age=31536000; preload"

    plain = _responses(tmp_path, **PRODUCTION, SECURE_SSL_REDIRECT="0", SECURE_HSTS_SECONDS="0")
    assert plain["http"] == [302, TO_LOGIN, None] and plain["https"] == [302, TO_LOGIN, None]


def test_development_neither_redirects_nor_sends_hsts(tmp_path):
    shown = _responses(tmp_path, ALLOWED_HOSTS="mail.example.test")

    assert shown["http"] == [302, TO_LOGIN, None] and shown["https"] == [302, TO_LOGIN, None]
