"""Sending with the event log on and off, side by side, against one fast SMTP sink.

    python bench/eventlog.py [--messages 20000] [--rounds 3] [--msgs-per-conn 20]

RotatingEmailBackend with 4 connections sends N messages to Postfix's smtp-sink (as in
bench/backend.py), rotating every `--msgs-per-conn` messages so that the pool reports a
connect and a rotation event for every few messages: far more events than a healthy campaign
makes. "on": the event log's receiver buffers every event and its thread writes them to
SQLite each second; "off": the receiver is disconnected. Rounds alternate; best of each.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.update(RELAYDECK_VAR_DIR=tempfile.mkdtemp(prefix="relaydeck-bench-events-"), DEBUG="0")
os.environ.setdefault("SECRET_KEY", "bench-only-" + "x" * 40)
os.environ.pop("DATABASE_URL", None)
sys.path.insert(0, str(ROOT / "bench"))

from backend import Sink, messages  # noqa: E402  (sets Django up)
from django.core.mail import get_connection  # noqa: E402
from django.core.management import call_command  # noqa: E402

from campaigns import eventlog  # noqa: E402
from campaigns.models import Event  # noqa: E402
from smtp_settings.events import smtp_event  # noqa: E402
from smtp_settings.models import SmtpServer  # noqa: E402
from smtp_settings.pool import close_all_pools  # noqa: E402


def send(server: SmtpServer, count: int) -> float:
    batch = messages(count)
    started = time.perf_counter()
    sent = get_connection("smtp_settings.backends.RotatingEmailBackend", server=server).send_messages(batch)
    elapsed = time.perf_counter() - started
    close_all_pools()
    assert sent == count
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--msgs-per-conn", type=int, default=20)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    sink = Sink("smtp-sink", 0)
    server = SmtpServer.objects.create(
        name="sink",
        host="127.0.0.1",
        port=sink.port,
        tls="none",
        auth_protocol="none",
        max_conns=4,
        max_msgs_per_conn=args.msgs_per_conn,
    )
    best = {"off": 0.0, "on": 0.0}
    try:
        for round_number in range(1, args.rounds + 1):
            for mode in ("off", "on"):
                if mode == "off":
                    smtp_event.disconnect(dispatch_uid="campaigns.eventlog")
                else:
                    smtp_event.connect(eventlog.record_pool_event, dispatch_uid="campaigns.eventlog")
                rate = send(server, args.messages)
                best[mode] = max(best[mode], rate)
                print(f"round {round_number}  event log {mode:<3} {rate:8.0f} msg/s", flush=True)
        time.sleep(1.5)  # the writer's last round
        eventlog.flush()
    finally:
        sink.stop()
    rows, events = Event.objects.count(), sum(Event.objects.values_list("count", flat=True))
    print(f"\n{args.messages} messages, 4 connections, a new connection every {args.msgs_per_conn} messages:")
    print(f"  event log off {best['off']:8.0f} msg/s")
    print(f"  event log on  {best['on']:8.0f} msg/s  {best['on'] / best['off']:.1%} of off")
    print(f"  {events} events written as {rows} rows")


if __name__ == "__main__":
    main()
