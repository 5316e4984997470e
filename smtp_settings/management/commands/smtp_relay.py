import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from smtp_settings.relay import listen_address
from smtp_settings.relay.server import Relay


class Command(BaseCommand):
    help = (
        "Run the SMTP relay: applications send transactional mail through it, with a relay credential "
        "or from RELAY_TRUSTED_NETWORKS, and hear 250 once the message is in the outbox."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--listen",
            default=settings.RELAY_LISTEN,
            metavar="HOST:PORT",
            help=f"Where to listen (default RELAY_LISTEN, {settings.RELAY_LISTEN}; port 0: any free one).",
        )

    def handle(self, *args, listen, **options):
        try:
            host, port = listen_address(listen)
        except ValueError:
            raise CommandError(f"--listen must be HOST:PORT, not {listen!r}") from None
        relay = Relay(host, port)
        try:
            relay.start()
        except OSError as error:
            raise CommandError(f"cannot listen on {listen}: {error.strerror}") from None
        tls = "STARTTLS offered" if relay.tls_context else "no STARTTLS (RELAY_TLS_CERT is not set)"
        self.stdout.write(f"SMTP relay listening on {host}:{relay.port}, {tls}. Ctrl-C stops it.")
        self.stdout.flush()
        if not relay.tls_context and not relay.is_local(host):
            self.stderr.write(
                f"Warning: the relay listens on {host} without TLS: passwords sent with AUTH can be "
                "overheard. Set RELAY_TLS_CERT and RELAY_TLS_KEY."
            )

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        relay.stop()
