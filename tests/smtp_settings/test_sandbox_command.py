"""`manage.py smtp_sandbox`: the provider-like SMTP server for demos, as a process."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.mail import EmailMessage, get_connection
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_sandbox_command_enforces_a_session_cap_and_writes_a_summary(sandbox_process, make_server):
    sandbox = sandbox_process("--max-msgs-per-session", "3", "--reject", "^bounce")
    server = make_server(port=sandbox.port)
    messages = [EmailMessage("s", "b", "a@example.test", [f"r{n}@example.test"]) for n in range(10)]
    backend = get_connection(
        "smtp_settings.backends.RotatingEmailBackend", server=server, max_threads=1, fail_silently=True
    )
    assert backend.send_messages(messages) == 10
    backend.send_messages([EmailMessage("s", "b", "a@example.test", ["bounce@example.test"])])

    process = sandbox.process
    summary = sandbox.stop()

    assert process.returncode == 0
    assert summary["received"] == summary["unique_message_ids"] == 10
    assert summary["duplicates"] == 0 and summary["rejected_recipients"] == 1
    assert summary["replied_421"] >= 2 and summary["sessions"] >= 4


def test_bad_options_exit_non_zero_with_one_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "smtp_sandbox", "--tempfail-rate", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "CommandError: --tempfail-rate must be between 0 and 1"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--bounce", "*@gone.test"], "--bounce and --bounce-to go together"),
        (["--bounce-to", "127.0.0.1:2587"], "--bounce and --bounce-to go together"),
        (["--bounce", "*", "--bounce-to", "2587"], "--bounce-to must be HOST:PORT, not '2587'"),
    ],
)
def test_bounce_options_go_together_and_name_a_host_and_port(options, error):
    with pytest.raises(CommandError) as refused:
        call_command("smtp_sandbox", *options)
    assert str(refused.value) == error
