import contextlib
import os
import signal
import subprocess
import sys
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from campaigns.demo import DEMO_SANDBOX_OPTIONS, DEMO_SANDBOX_PORT

STOP_WAIT_S = 20  # after its SIGTERM, then the child's whole process group is killed


def _dashboard(addrport: str) -> list[str]:
    """runserver while DEBUG is on, without its reloader (the worker beside it would not reload);
    gunicorn with gunicorn.conf.py once DEBUG is off."""
    if settings.DEBUG:
        return [sys.executable, "manage.py", "runserver", addrport, "--noreload"]
    bind = f"127.0.0.1:{addrport}" if addrport.isdigit() else addrport  # a bare port, as runserver reads it
    config = settings.BASE_DIR / "gunicorn.conf.py"
    return [sys.executable, "-m", "gunicorn", f"--config={config}", f"--bind={bind}"]


class Command(BaseCommand):
    help = (
        "Run the dashboard (runserver while DEBUG is on, else gunicorn), its django-q2 worker and the "
        "SMTP relay (on RELAY_LISTEN) together, and with --sandbox the local SMTP sandbox the demo sends "
        "to; Ctrl-C stops them all."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--sandbox",
            action="store_true",
            help=f"Also run the SMTP sandbox on 127.0.0.1:{DEMO_SANDBOX_PORT} with SES- and Exchange-like limits, "
            "keeping the last SANDBOX_INBOX_MESSAGES it receives for the sandbox inbox (/sandbox/).",
        )

    def handle(self, *args, addrport, sandbox, verbosity, **options):
        if not settings.DEBUG:
            # whitenoise serves, with DEBUG off, only what collectstatic wrote to STATIC_ROOT.
            call_command("collectstatic", interactive=False, verbosity=verbosity)
        commands = {
            "dashboard": _dashboard(addrport),
            "worker": [sys.executable, "manage.py", "qcluster"],
            "relay": [sys.executable, "manage.py", "smtp_relay", "--listen", settings.RELAY_LISTEN],
        }
        if sandbox:
            inbox = f"--inbox={settings.SANDBOX_INBOX_MESSAGES}"
            commands["sandbox"] = [sys.executable, "manage.py", "smtp_sandbox", "--quiet", inbox, *DEMO_SANDBOX_OPTIONS]
        # Ctrl-C and SIGTERM reach only this process (the children have sessions of their own,
        # and a shell may start us with SIGINT ignored); each child then gets one SIGTERM.
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        processes = {name: subprocess.Popen(command, start_new_session=True) for name, command in commands.items()}
        others = ", the SMTP sandbox" if sandbox else ""
        self.stdout.write(
            f"Relaydeck is running on http://{addrport}/ with its worker{others} and the SMTP relay on "
            f"{settings.RELAY_LISTEN}. Ctrl-C stops all."
        )

        while not stop.wait(0.5) and all(process.poll() is None for process in processes.values()):
            pass
        exit_code = 0
        for name, process in processes.items():
            if process.poll() is not None and not stop.is_set():
                exit_code = process.returncode or 1
                self.stderr.write(f"The {name} stopped (exit code {process.returncode}); stopping the rest.")
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_WAIT_S)
            # Each child leads a process group (its session) holding whatever it started:
            # gunicorn's and django-q2's workers. Killing the group leaves nothing behind, even
            # when a child did not stop in time or went without stopping its own.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        sys.exit(exit_code)
