import json
import signal
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from smtp_settings.presets import SANDBOX_PORT
from smtp_settings.relay import listen_address
from smtp_settings.sandbox import SandboxServer


class Command(BaseCommand):
    help = (
        "Run a local SMTP server that behaves like real providers (SES session caps, Exchange "
        "connection caps, temporary failures, bounces), for demos and manual tests. It delivers nothing "
        "further: messages are counted and dropped, the last --inbox N of them kept for the dashboard's "
        "sandbox inbox."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument(
            "--port", type=int, default=SANDBOX_PORT, help=f"Port to listen on (default {SANDBOX_PORT}; 0 = any free)."
        )
        parser.add_argument(
            "--max-msgs-per-session",
            type=int,
            default=0,
            metavar="N",
            help="Answer the MAIL after N messages with SES's 421 and hang up (0 = no cap).",
        )
        parser.add_argument(
            "--max-conns",
            type=int,
            default=0,
            metavar="N",
            help="Refuse connections beyond N at once with Exchange's 421 4.3.2 (0 = no cap).",
        )
        parser.add_argument(
            "--tempfail-rate",
            type=float,
            default=0.0,
            metavar="P",
            help="Answer 451 to this fraction (0-1) of messages.",
        )
        parser.add_argument("--reject", metavar="PATTERN", help="Answer 550 to recipients matching this regex.")
        parser.add_argument(
            "--bounce",
            metavar="PATTERN",
            help="Accept, then send a DSN (5.1.1) for each recipient matching this pattern (fnmatch: '*@gone.test') "
            "to the message's envelope sender, through --bounce-to.",
        )
        parser.add_argument(
            "--bounce-to",
            metavar="HOST:PORT",
            help="The SMTP server DSNs go through: Relaydeck's relay, whose listener takes bounce reports.",
        )
        parser.add_argument("--latency", type=float, default=0, metavar="MS", help="Wait this long before every reply.")
        parser.add_argument("--auth", metavar="USER:PASS", help="Require AUTH PLAIN/LOGIN with these credentials.")
        parser.add_argument("--pipelining", action="store_true", help="Advertise PIPELINING (RFC 2920).")
        parser.add_argument("--limits", default="", metavar="'MAILMAX=n RCPTMAX=n'", help="Advertise RFC 9422 LIMITS.")
        parser.add_argument(
            "--inbox",
            type=int,
            default=0,
            metavar="N",
            help="Keep the last N messages received for the dashboard's sandbox inbox (/sandbox/); 0 = none (the "
            "default: nothing written, as fast as without).",
        )
        parser.add_argument(
            "--inbox-dir",
            type=Path,
            default=settings.SANDBOX_INBOX_DIR,
            metavar="PATH",
            help="The Maildir the inbox is kept in (default SANDBOX_INBOX_DIR, where the dashboard reads it).",
        )
        parser.add_argument("--summary-file", metavar="PATH", help="Write a JSON summary here on exit.")
        parser.add_argument("--quiet", action="store_true", help="No live counter line.")

    def handle(self, *args, **options):
        if not 0 <= options["tempfail_rate"] <= 1:
            raise CommandError("--tempfail-rate must be between 0 and 1")
        if options["inbox"] < 0:
            raise CommandError("--inbox must be 0 or more")
        if options["auth"] and ":" not in options["auth"]:
            raise CommandError("--auth must be USER:PASS")
        if bool(options["bounce"]) != bool(options["bounce_to"]):
            raise CommandError("--bounce and --bounce-to go together")
        bounce_to = None
        if options["bounce_to"]:
            try:
                bounce_to = listen_address(options["bounce_to"])
            except ValueError:
                raise CommandError(f"--bounce-to must be HOST:PORT, not {options['bounce_to']!r}") from None
        sandbox = SandboxServer(
            host=options["host"],
            port=options["port"],
            auth=options["auth"],
            max_msgs_per_session=options["max_msgs_per_session"],
            max_conns=options["max_conns"],
            tempfail_rate=options["tempfail_rate"],
            reject=options["reject"],
            latency_ms=options["latency"],
            pipelining=options["pipelining"],
            limits=options["limits"],
            bounce=options["bounce"],
            bounce_to=bounce_to,
            inbox=options["inbox_dir"] if options["inbox"] else None,
            inbox_keep=options["inbox"],
            keep_bodies=False,  # it runs for days under `make run`: its summary needs no bodies
        )
        try:
            sandbox.start()
        except OSError as error:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {error.strerror}") from None
        self.stdout.write(f"SMTP sandbox listening on {options['host']}:{sandbox.port}. Ctrl-C stops it.")
        self.stdout.flush()

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        live = not options["quiet"] and sys.stdout.isatty()
        while not stop.wait(1):
            if live:
                s = sandbox.summary()
                self.stdout.write(
                    f"\rsessions {s['sessions']}  refused {s['refused_connections']}  received {s['received']}  "
                    f"421s {s['replied_421']}  451s {s['tempfailed']}  550s {s['rejected_recipients']}  "
                    f"DSNs {s['bounces_sent']}",
                    ending="",
                )
                self.stdout.flush()
        sandbox.stop()
        summary = sandbox.summary()
        text = json.dumps(summary, indent=2)
        self.stdout.write(("\n" if live else "") + text)
        if options["summary_file"]:
            Path(options["summary_file"]).write_text(text + "\n")
