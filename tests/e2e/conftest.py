"""The browser end-to-end suite: Debian's Chromium, driven by Playwright, against the real stack.

One stack for the whole suite (stopped once its last test is done, before the rest of a full
run goes on), each part a process of its own as `make run` starts them:
the dashboard (`runserver --noreload`), its worker (`qcluster`) and the SMTP sandbox with an
SES-like cap per session and its inbox on, on random loopback ports, on a fresh SQLite file. Each test step
saves a screenshot under var/e2e/<test>/ for a person to look at after the run; the
processes' output goes to var/e2e/logs/.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "e2e"
CHROMIUM = Path("/usr/bin/chromium")
# Nothing of Chromium's own may reach the internet (the tests' network guard sees only this
# process): no updates, no sync, no QUIC probes, and every name but loopback unresolvable.
CHROMIUM_ARGS = [
    "--no-sandbox",  # the suite runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
SES_CAP = 10  # messages per sandbox session before its 421: 500 messages on at most 20 connections meet it
# As `make run` starts it, on any free port, with a cap per session the journey is sure to meet.
# No cap on connections: what one test leaves open until its idle timeout (the pool's 20 after
# the journey) must not refuse the next test's connection test.
INBOX_KEEP = 1000  # the journey's campaign and test message, all kept for the sandbox inbox (/sandbox/)
SANDBOX_OPTIONS = [
    *("--port=0", f"--max-msgs-per-session={SES_CAP}", "--pipelining", "--quiet"),
    f"--inbox={INBOX_KEEP}",  # where: SANDBOX_INBOX_DIR, the dashboard's too
]
START_TIMEOUT_S = 30
STOP_WAIT_S = 10
ADMIN = ("admin", "e2e-admin-password")
VIEWER = ("viewer", "e2e-viewer-password")

expect.set_options(timeout=15_000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Stack:
    """The running stack: where the dashboard and the sandbox listen, and how to run a
    management command against its database."""

    url: str
    sandbox_port: int
    env: dict

    def manage(self, *args: str) -> str:
        return _manage(self.env, *args)


class Processes:
    """Long-running processes, each leading a process group of its own, all killed at the end
    with whatever they started (django-q2's workers)."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.started = env, logs, {}

    def start(self, name: str, *args: str) -> Path:
        log = self.logs / f"{name}.log"
        with log.open("w") as output:
            self.started[name] = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return log

    def wait_for(self, name: str, ready) -> None:
        """Until `ready()` is true; fail saying why if the process stops or takes too long."""
        process, deadline = self.started[name], time.monotonic() + START_TIMEOUT_S
        while not ready():
            log = (self.logs / f"{name}.log").read_text()
            if process.poll() is not None:
                pytest.fail(f"The {name} stopped (exit code {process.returncode}) while starting:\n{log}")
            if time.monotonic() > deadline:
                pytest.fail(f"The {name} did not start within {START_TIMEOUT_S} s:\n{log}")
            time.sleep(0.1)

    def stop_all(self) -> list[str]:
        """Stop every process; say which had stopped on its own before (a crash during the run)."""
        crashed = [f"{name} (exit code {p.returncode})" for name, p in self.started.items() if p.poll() is not None]
        for process in self.started.values():
            if process.poll() is None:
                process.terminate()
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_WAIT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return crashed


@pytest.fixture(scope="package")
def stack(tmp_path_factory) -> Stack:
    state = tmp_path_factory.mktemp("e2e-stack")
    logs = ARTIFACTS / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    web_port = _free_port()
    url = f"http://127.0.0.1:{web_port}"
    env = {
        name: value
        for name, value in os.environ.items()
        # The stack has a database of its own, and keeps its shared limits in it.
        if name not in {"DATABASE_URL", "REDIS_URL"}
    } | {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "RELAYDECK_VAR_DIR": str(state),
        "SQLITE_PATH": str(state / "db.sqlite3"),
        "SITE_URL": url,  # the links in the messages lead back to this dashboard
        # The sandbox writes what it receives here, where the dashboard's sandbox inbox reads it.
        "SANDBOX_INBOX_DIR": str(state / "sandbox-inbox"),
        "SANDBOX_INBOX_MESSAGES": str(INBOX_KEEP),
        # A message deferred by the sandbox's 421s goes again within seconds, not a minute:
        # the journey waits for the campaign to finish.
        "CAMPAIGN_RETRY_DELAY_S": "1",
    }
    _manage(env, "migrate", "--noinput")
    username, password = ADMIN
    _manage(env | {"DJANGO_SUPERUSER_USERNAME": username, "DJANGO_SUPERUSER_PASSWORD": password}, "ensure_admin")

    processes = Processes(env, logs)
    sandbox_log = processes.start("sandbox", "smtp_sandbox", *SANDBOX_OPTIONS)
    processes.start("dashboard", "runserver", f"127.0.0.1:{web_port}", "--noreload")
    processes.start("worker", "qcluster")
    try:
        processes.wait_for("sandbox", lambda: "listening on" in sandbox_log.read_text())
        sandbox_port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", sandbox_log.read_text())[1])
        processes.wait_for("dashboard", lambda: _listening(web_port))
        yield Stack(url=url, sandbox_port=sandbox_port, env=env)
    finally:
        crashed = processes.stop_all()
    assert not crashed, f"Stopped during the run: {', '.join(crashed)} (see {logs})"


@pytest.fixture(scope="package")
def browser() -> Browser:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): install it with `apt-get install -y chromium chromium-driver`.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Screenshots:
    """One PNG per step, numbered in order: var/e2e/<test>/<NN-step>.png."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder, self.taken = folder, 0

    def take(self, page: Page, step: str) -> None:
        self.taken += 1
        page.screenshot(path=self.folder / f"{self.taken:02d}-{step}.png", full_page=True)
        # Debian's Chromium leaves the page scrolled after a full-page screenshot while the
        # browser keeps the old scroll position, and the next click lands beside its target
        # (on the form around a button, say). Resizing the viewport puts the two back in step.
        size = page.viewport_size
        page.set_viewport_size({**size, "height": size["height"] + 1})
        page.set_viewport_size(size)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call":
        item.e2e_failed = report.failed
    return report


@pytest.fixture
def shots(request) -> Screenshots:
    return Screenshots(ARTIFACTS / request.node.name)


@pytest.fixture
def new_context(request, browser, stack, shots):
    """Open browser contexts (fresh profiles: no cookies) on the stack:
    `new_context(java_script_enabled=False)`. Any request to another host than the stack's
    is refused, and fails the test, as does anything the Content-Security-Policy blocks (the
    browser says so on the console). A failed test ends with a screenshot of each open page."""
    opened, elsewhere, blocked = [], [], []

    def refuse(route: Route) -> None:
        elsewhere.append(route.request.url)
        route.abort()

    def watch(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            blocked.append(f"{message.page.url if message.page else '?'}: {message.text}")

    def open_context(**options) -> BrowserContext:
        context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900}, **options)
        context.set_default_timeout(15_000)
        context.route(re.compile(r"^(?!" + re.escape(stack.url) + r"(/|$))[a-z]+://"), refuse)
        context.on("console", watch)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        if getattr(request.node, "e2e_failed", False):
            for page in context.pages:
                shots.take(page, "failed")
        context.close()
    assert not elsewhere, f"The browser tried to reach other hosts: {elsewhere}"
    assert not blocked, "The Content-Security-Policy blocked:\n" + "\n".join(blocked)


def log_in(context: BrowserContext, username: str, password: str) -> Page:
    """A page of `context`, logged in through the login form."""
    page = context.new_page()
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    return page


def csrf_token(page: Page) -> str:
    """The CSRF token of the page's forms (every page has one: the logout form)."""
    return page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
