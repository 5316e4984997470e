"""Settings come from the environment with safe defaults."""

import json
import os
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


def _settings_process(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")}
    environment = clean | {"DJANGO_SETTINGS_MODULE": "project.settings", "RELAYDECK_VAR_DIR": str(tmp_path)} | env
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


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


def test_bad_boolean_is_a_clear_configuration_error(tmp_path):
    result = _settings_process(tmp_path, DEBUG="maybe")
    assert "DEBUG must be a boolean (1/0, true/false), not 'maybe'" in result.stderr


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout():
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 20_000
