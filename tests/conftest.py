import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from smtp_settings.events import smtp_event
from smtp_settings.limit_stores import store
from smtp_settings.models import BounceMailbox, SmtpServer
from smtp_settings.pool import close_all_pools
from smtp_settings.relay.server import Relay
from smtp_settings.sandbox import SandboxServer
from smtp_settings.validators import HOST_NAME
from tests.certs import make_certificates
from tests.dovecot import Dovecot
from tests.esp_server import FakeEsp
from tests.hostile import HostileServer

ROOT = Path(__file__).resolve().parent.parent


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _loopback_only(event: str, args: tuple) -> None:
    """Tests talk to 127.0.0.1 only: fail any test that would resolve or reach another host.

    Malformed names (with spaces, say) are let through: the resolver library rejects
    them without sending a query, which is how the DNS-failure test stays offline.
    """
    if event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if host and HOST_NAME.match(host) and not _is_loopback(host):
            raise RuntimeError(f"a test tried to resolve {host!r}; tests only use loopback addresses")
    elif event == "socket.connect" and isinstance(args[1], tuple) and not _is_loopback(args[1][0]):
        raise RuntimeError(f"a test tried to connect to {args[1]!r}; tests only use loopback addresses")


def pytest_configure(config):
    sys.addaudithook(_loopback_only)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _events_written_on_flush(settings, monkeypatch):
    """No event-log thread in tests, and each test buffers its own events: they are written
    when the test or the sender flushes."""
    from campaigns.eventlog import writer

    settings.EVENT_LOG_FLUSH_S = 0
    monkeypatch.setattr(writer, "_buffer", writer._Buffer())


@pytest.fixture(autouse=True)
def _fresh_pools():
    """Pools live as long as their process; each test starts and ends without any."""
    yield
    close_all_pools()


@pytest.fixture(autouse=True)
def _own_limit_keys(settings):
    """With Redis, each test keeps its shared limits under keys of its own (the worker
    processes it starts get the same prefix): server ids repeat from one run to the next."""
    settings.LIMITS_KEY_PREFIX = f"test:{uuid.uuid4().hex}:"
    store.cache_clear()
    yield
    if settings.REDIS_URL:
        client = store().client
        for key in client.scan_iter(match=settings.LIMITS_KEY_PREFIX + "*"):
            client.delete(key)
    store.cache_clear()


@pytest.fixture
def pool_events():
    """Every PoolEvent sent while the test runs, in order."""
    events = []

    def receive(sender, event, **kwargs):
        events.append(event)

    smtp_event.connect(receive, weak=False)
    yield events
    smtp_event.disconnect(receive)


def _servers_of(server_class):
    """A fixture's body: a function that starts servers of `server_class`, all stopped after."""
    started = []

    def start(**options):
        server = server_class(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_sandbox():
    """Start SMTP sandboxes on random loopback ports: `smtp_sandbox(auth="u:p", ...)`."""
    yield from _servers_of(SandboxServer)


@pytest.fixture
def smtp_relay(transactional_db):
    """Start SMTP relays on random loopback ports, writing to the test database (from threads
    of their own, hence transactional_db): `smtp_relay(trusted_networks=["127.0.0.0/8"])`."""
    yield from _servers_of(Relay)


@pytest.fixture
def hostile_smtp():
    """Start misbehaving SMTP servers on random loopback ports (tests/hostile.py):
    `hostile_smtp(banner=endless("220-AAAA"), replies={"MAIL": "999 what"}, byte_delay_s=1)`."""
    yield from _servers_of(HostileServer)


@pytest.fixture
def fake_esp():
    """Start ESP APIs on random loopback ports (tests/esp_server.py):
    `fake_esp(routes=postmark_routes(), key="token", key_header="X-Postmark-Server-Token")`."""
    yield from _servers_of(FakeEsp)


class SandboxProcess:
    """`manage.py smtp_sandbox` in a process of its own (so what it receives costs the test
    process no memory); `stop()` returns its JSON summary."""

    def __init__(self, *options: str, summary_file: Path):
        self.summary_file = summary_file
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "smtp_sandbox", "--port", "0", "--summary-file", str(summary_file), *options],
            cwd=ROOT,
            env=os.environ | {"DJANGO_SETTINGS_MODULE": "project.settings"},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(re.search(r"listening on 127.0.0.1:(\d+)", self.process.stdout.readline()).group(1))

    def stop(self) -> dict:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=10)
        return json.loads(self.summary_file.read_text())


@pytest.fixture
def sandbox_process(tmp_path):
    """Start `manage.py smtp_sandbox` processes: `sandbox_process("--max-msgs-per-session", "3")`."""
    started = []

    def start(*options: str) -> SandboxProcess:
        started.append(SandboxProcess(*options, summary_file=tmp_path / f"summary-{len(started)}.json"))
        return started[-1]

    yield start
    for sandbox in started:
        if sandbox.process.poll() is None:
            sandbox.process.kill()
            sandbox.process.wait()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def trust_test_ca(certificates, monkeypatch):
    """Make the test CA the only one the client trusts, as if it were a public CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def make_server(db):
    def make(**overrides) -> SmtpServer:
        fields = {
            "name": f"server {SmtpServer.objects.count() + 1}",
            "host": "127.0.0.1",
            "port": 2525,
            "tls": "none",
            "auth_protocol": "none",
            "send_timeout": 5,
        }
        server = SmtpServer(**(fields | overrides))
        server.full_clean()
        server.save()
        return server

    return make


@pytest.fixture
def dovecot(certificates):
    """A Dovecot IMAP and POP3 server on random loopback ports, with one empty mailbox
    (tests/dovecot.py). Never skipped: without Dovecot the test fails, saying why."""
    server = Dovecot(certificates).start()
    yield server
    server.stop()


@pytest.fixture
def make_mailbox(db):
    """A bounce mailbox: `make_mailbox(port=dovecot.ports["imaps"], ...)`, Dovecot's user by default."""

    def make(**overrides) -> BounceMailbox:
        fields = {
            "name": f"mailbox {BounceMailbox.objects.count() + 1}",
            "host": "127.0.0.1",
            "port": 993,
            "username": Dovecot.user,
            "password": Dovecot.password,
        }
        mailbox = BounceMailbox(**(fields | overrides))
        mailbox.full_clean()
        mailbox.save()
        return mailbox

    return make


@pytest.fixture(scope="session", autouse=True)
def _empty_redis_task_queue():
    """Tests that enqueue leave tasks behind; with Redis as the broker (the ORM broker's queue
    is in the test database) they would outlive the run and reach the next run's workers."""
    from django.conf import settings
    from django_q.brokers import get_broker

    broker = get_broker() if "redis" in settings.Q_CLUSTER else None
    if broker:
        broker.purge_queue()
    yield
    if broker:
        broker.purge_queue()


@pytest.fixture
def login_as(db, django_user_model):
    """A new browser logged in as a new user with this role (None: an account without one)."""
    from project.roles import assign_role

    def login(role) -> Client:
        user = django_user_model.objects.create_user(f"{role or 'norole'}-{django_user_model.objects.count()}")
        assign_role(user, role)
        browser = Client()
        browser.force_login(user)
        return browser

    return login


@pytest.fixture
def sender_client(login_as) -> Client:
    """Lists and campaigns are a sender's work: their view tests run as one."""
    from project.roles import Role

    return login_as(Role.SENDER)


@pytest.fixture
def viewer_client(login_as) -> Client:
    from project.roles import Role

    return login_as(Role.VIEWER)


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
def relay_process():
    """Start `manage.py smtp_relay` on the test database, trusting loopback unless the keyword
    arguments (settings) say otherwise: `relay_process(RELAY_TRUSTED_NETWORKS="")` gives (process, port)."""
    started = []

    def start(**env: str) -> tuple[subprocess.Popen, int]:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "smtp_relay", "--listen", "127.0.0.1:0"],
            cwd=ROOT,
            env=_worker_env(**({"RELAY_TRUSTED_NETWORKS": "127.0.0.1"} | env)),
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process, int(re.search(r"listening on 127\.0\.0\.1:(\d+)", process.stdout.readline())[1])

    yield start
    for process in started:
        process.kill()
        process.wait()


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
