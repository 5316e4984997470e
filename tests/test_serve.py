"""`manage.py serve`, the heart of `make run`: dashboard and worker together, Ctrl-C stops both."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url: str, timeout_s: float) -> int:
    opener = urllib.request.build_opener(
        type(
            "NoRedirect",
            (urllib.request.HTTPRedirectHandler,),
            {
                "redirect_request": lambda *args: None,
            },
        )
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return opener.open(url, timeout=2).status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _children(pid: int) -> dict[int, list[str]]:
    """Child pid -> argv, from /proc."""
    pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child): Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0") for child in pids}


def test_serve_runs_dashboard_and_worker_and_ctrl_c_stops_both(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"RELAYDECK_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "project.settings"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    port = _free_port()
    serve = subprocess.Popen(
        [*manage, "serve", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        seen = []
        while not any("] running." in line for line in seen):  # django-q2: "Q Cluster … [relaydeck] running."
            line = serve.stdout.readline().decode()
            assert line, "serve exited before its worker was running:\n" + "".join(seen)
            seen.append(line)
        assert _wait_for_http(f"http://127.0.0.1:{port}/settings/smtp/", timeout_s=30) == 302  # to the login page
        children = _children(serve.pid)
        assert sorted(command[2] for command in children.values()) == ["qcluster", "runserver"]
        serve.send_signal(signal.SIGINT)
        output = serve.communicate(timeout=30)[0].decode()
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 0
    assert "has stopped" in output  # django-q2's last word
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
