import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
SITE = "https://mail.example.test"


@pytest.fixture
def site_url(settings) -> str:
    """Unsubscribe links point at this public address."""
    settings.SITE_URL = SITE
    return SITE


def _worker_env(**overrides: str) -> dict:
    env = (
        dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="project.settings",
            CAMPAIGN_LEASE_S="30",
            LIMITS_KEY_PREFIX=settings.LIMITS_KEY_PREFIX,
        )
        | overrides
    )
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return env


@pytest.fixture
def workers():
    """Start `manage.py qcluster` processes against the test database, with settings from
    keyword arguments (`workers(CAMPAIGN_LEASE_S="2")`); all killed at the end."""
    started = []

    def start(**env: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=_worker_env(**env),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:  # the whole group, even if its leader is gone: no stray worker may outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
