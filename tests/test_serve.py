"""`manage.py serve`, the heart of `make run`: dashboard, worker and SMTP relay together
(runserver while DEBUG is on, gunicorn once it is off), and Ctrl-C stops every process they started."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, "manage.py"]
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "test-only-secret-key-long-enough-for-django-to-accept-it",
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_SSL_REDIRECT": "0",  # the test speaks plain HTTP
    "SECURE_COOKIES": "0",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def _get(url: str, timeout_s: float, **headers: str) -> urllib.request.addinfourl | urllib.error.HTTPError:
    """The response (redirects not followed), once the server answers."""
    opener = urllib.request.build_opener(_NoRedirect)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers)  # noqa: S310 (the test's own http:// URLs)
            return opener.open(request, timeout=2)
        except urllib.error.HTTPError as error:
            return error
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _smtp_greeting(listen: str, timeout_s: float = 30) -> bytes:
    """The first line an SMTP server on HOST:PORT says, once it listens."""
    host, port = listen.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                return sock.makefile("rb").readline()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _children(pid: int) -> dict[int, list[str]]:
    """Child pid -> argv, from /proc."""
    pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child): Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0") for child in pids}


def _living_members(groups: set[int]) -> set[int]:
    """Processes of these process groups that are still alive (zombies are not)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgid = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # gone meanwhile
            continue
        if int(pgid) in groups and state != "Z":
            members.add(int(stat.parent.name))
    return members


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A migrated SQLite database of its own, whatever DATABASE_URL the suite runs with."""
    var_dir = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"RELAYDECK_VAR_DIR": str(var_dir), "STATIC_ROOT": str(var_dir / "static")}
    env["RELAY_LISTEN"] = f"127.0.0.1:{_free_port()}"
    env["DJANGO_SETTINGS_MODULE"] = "project.settings"
    subprocess.run([*MANAGE, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    return env


@contextlib.contextmanager
def _serving(env: dict, port: int) -> Iterator[subprocess.Popen]:
    """`manage.py serve` on the port, once its worker is running; killed with all it started at the end."""
    serve = subprocess.Popen(
        [*MANAGE, "serve", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    groups = set()
    try:
        seen = []
        while not any("] running." in line for line in seen):  # django-q2: "Q Cluster … [relaydeck] running."
            line = serve.stdout.readline().decode()
            assert line, "serve exited before its worker was running:\n" + "".join(seen)
            seen.append(line)
        groups = set(_children(serve.pid))
        yield serve
    finally:
        serve.kill()
        for group in groups:  # whatever a failed test left running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        serve.wait()


def _ctrl_c_stops_everything(serve: subprocess.Popen) -> str:
    """Press Ctrl-C: serve exits 0 within seconds, and no process its children started is left."""
    groups = set(_children(serve.pid))  # each child leads a process group with what it started
    assert len(_living_members(groups)) > len(groups)  # the web server's and the cluster's own workers
    serve.send_signal(signal.SIGINT)
    output = serve.communicate(timeout=10)[0].decode()
    assert serve.returncode == 0, output
    assert _living_members(groups) == set()
    return output


def test_serve_runs_runserver_and_worker_while_debug_is_on_and_ctrl_c_stops_all(env):
    port = _free_port()
    with _serving(env | {"DEBUG": "1"}, port) as serve:
        assert _get(f"http://127.0.0.1:{port}/settings/smtp/", timeout_s=30).status == 302  # to the login page
        assert sorted(argv[2] for argv in _children(serve.pid).values()) == ["qcluster", "runserver", "smtp_relay"]
        assert _smtp_greeting(env["RELAY_LISTEN"]).startswith(b"220 ")
        output = _ctrl_c_stops_everything(serve)
    assert "has stopped" in output  # django-q2's last word


def test_serve_runs_gunicorn_with_static_files_once_debug_is_off_and_ctrl_c_stops_all(env):
    port = _free_port()
    with _serving(env | PRODUCTION, port) as serve:
        login = _get(f"http://127.0.0.1:{port}/login/", timeout_s=30)
        assert login.status == 200
        assert login.headers["Server"] == "gunicorn"
        assert sorted(argv[2] for argv in _children(serve.pid).values()) == ["gunicorn", "qcluster", "smtp_relay"]
        # The page links the hashed copy collectstatic wrote, and whitenoise serves it as such.
        stylesheet = re.search(r'href="(/static/css/relaydeck\.[0-9a-f]{12}\.css)"', login.read().decode())[1]
        static = _get(f"http://127.0.0.1:{port}{stylesheet}", timeout_s=5)
        assert static.status == 200
        assert "immutable" in static.headers["Cache-Control"]
        assert b".badge" in static.read()
        # Only Django's BEHIND_TLS_PROXY makes X-Forwarded-Proto believed, never gunicorn on its
        # own: a request that merely claims HTTPS is not answered as one (no HSTS header).
        claimed = _get(f"http://127.0.0.1:{port}/login/", timeout_s=5, **{"X-Forwarded-Proto": "https"})
        assert claimed.status == 200
        assert "Strict-Transport-Security" not in claimed.headers
        output = _ctrl_c_stops_everything(serve)
    assert '"GET /login/ HTTP/1.1" 200' in output  # gunicorn's access log, on stdout
    assert "Shutting down: Master" in output
