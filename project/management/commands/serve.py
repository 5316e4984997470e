import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the dashboard (runserver) and its django-q2 worker together; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        manage = [sys.executable, "manage.py"]
        commands = {
            "dashboard": [*manage, "runserver", addrport, "--noreload"],
            "worker": [*manage, "qcluster"],
        }
        processes = {name: subprocess.Popen(command) for name, command in commands.items()}
        self.stdout.write(f"Relaydeck is running on http://{addrport}/ with its worker. Ctrl-C stops both.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        exit_code = 0
        try:
            while all(process.poll() is None for process in processes.values()):
                time.sleep(0.5)
            stopped = next(name for name, process in processes.items() if process.poll() is not None)
            exit_code = processes[stopped].returncode
            self.stderr.write(f"The {stopped} stopped (exit code {exit_code}); stopping the rest.")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            for process in processes.values():
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        sys.exit(exit_code)
