import signal
import subprocess
import sys
import threading

from django.core.management.base import BaseCommand

from campaigns.demo import DEMO_SANDBOX_OPTIONS, DEMO_SANDBOX_PORT


class Command(BaseCommand):
    help = (
        "Run the dashboard (runserver) and its django-q2 worker together, and with --sandbox the "
        "local SMTP sandbox the demo sends to; Ctrl-C stops them all."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--sandbox",
            action="store_true",
            help=f"Also run the SMTP sandbox on 127.0.0.1:{DEMO_SANDBOX_PORT} with SES- and Exchange-like limits.",
        )

    def handle(self, *args, addrport, sandbox, **options):
        manage = [sys.executable, "manage.py"]
        commands = {
            "dashboard": [*manage, "runserver", addrport, "--noreload"],
            "worker": [*manage, "qcluster"],
        }
        if sandbox:
            commands["sandbox"] = [*manage, "smtp_sandbox", "--quiet", *DEMO_SANDBOX_OPTIONS]
        # Ctrl-C and SIGTERM reach only this process (the children have sessions of their own,
        # and a shell may start us with SIGINT ignored); each child then gets one SIGTERM.
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        processes = {name: subprocess.Popen(command, start_new_session=True) for name, command in commands.items()}
        others = " and the SMTP sandbox" if sandbox else ""
        self.stdout.write(f"Relaydeck is running on http://{addrport}/ with its worker{others}. Ctrl-C stops all.")

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
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        sys.exit(exit_code)
