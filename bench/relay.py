"""Messages per second the SMTP relay accepts, committed to the outbox, from 1 and 50 clients.

    python bench/relay.py [--messages 2000] [--sessions 1 50] [--rounds 2] [--database sqlite|postgres]

What it measures: a real `manage.py smtp_relay` on a fresh database (SQLite by default, the
issue's target: 500 messages a second) takes ~2 KB messages from Postfix's smtp-source (C, so
the client costs next to nothing; unpacked into var/bench/ with smtp-sink on first use) from a
trusted address, without AUTH, as the chat server of issue 12 sends. Each run sends
`--messages` over S sessions at once, both ways applications do: a new connection for every
message, and one connection kept for all of a session's messages. A message counts once the
client has its 250, which the relay gives only once the message is committed; the figures are
messages a second (wall clock, first connection to last 250) and the relay's CPU time per
message, and the outbox must hold every message at the end. The best of `--rounds` counts.

Then, unless `--no-deliver`: the time from the first accept to the last delivery for
`--deliver` messages (1,000) sent by 50 sessions at once, through a server entry with
`max_conns=5` pointing at Postfix's smtp-sink, delivered by a `manage.py qcluster` started
before the first message (Q_WORKERS=2); and `QueuedEmailBackend.send_messages` of 1,000
messages in one transaction, commit included (the issue's target: under 1 s), best of
`--rounds`.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import postfix
from cluster_run import ROOT, cpu_s, open_fresh_database

MODES = {"connection per message": [], "connection kept": ["-d"]}


def start_relay() -> tuple[subprocess.Popen, int]:
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "smtp_relay", "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # a line per session
        text=True,
    )
    return relay, int(re.search(r"listening on 127\.0\.0\.1:(\d+)", relay.stdout.readline())[1])


def smtp_source() -> tuple[Path, dict]:
    return postfix.tool("smtp-source")


def run(port: int, relay_pid: int, sessions: int, messages: int, mode: list[str]) -> tuple[float, float]:
    """(messages a second, relay CPU ms a message) for one smtp-source run; all must be queued."""
    from smtp_settings.models import OutboxMessage

    binary, env = smtp_source()
    before, cpu_before = OutboxMessage.objects.count(), cpu_s(relay_pid)
    command = [str(binary), *mode, "-s", str(sessions), "-m", str(messages), "-l", "2000", "-N"]
    command += ["-f", "app@example.test", "-t", "reader@example.test", "-S", "Your order", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    queued = OutboxMessage.objects.count() - before
    if queued != messages:
        raise SystemExit(f"{queued} of {messages} messages are in the outbox")
    return messages / elapsed, (cpu_s(relay_pid) - cpu_before) * 1000 / messages


def bench(database: str, args) -> None:
    open_fresh_database(database, args.database_url, "", RELAY_TRUSTED_NETWORKS="127.0.0.1")
    relay, port = start_relay()
    try:
        for sessions in args.sessions:
            for name, mode in MODES.items():
                best = max(run(port, relay.pid, sessions, args.messages, mode) for _ in range(args.rounds))
                print(
                    f"{database:7} {sessions:3} sessions, {name:23} {best[0]:7.0f} msg/s accepted, "
                    f"relay CPU {best[1]:.2f} ms/msg",
                    flush=True,
                )
    finally:
        relay.terminate()
        relay.wait()


def deliver(args) -> None:
    """Seconds from the first message accepted to the last delivered, through max_conns=5."""
    from cluster_run import start_sink
    from django.db.models import Max, Min

    from smtp_settings.models import OutboxMessage, SmtpServer

    sink = start_sink()
    SmtpServer.objects.create(
        name="sink", host="127.0.0.1", port=sink.port, tls="none", auth_protocol="none", max_conns=5
    )
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=os.environ | {"Q_WORKERS": "2"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    relay, port = start_relay()
    try:
        time.sleep(3)  # the cluster is up
        first = OutboxMessage.objects.count()
        run(port, relay.pid, 50, args.deliver, MODES["connection per message"])
        batch = OutboxMessage.objects.filter(pk__gt=first)
        while batch.filter(status="sent").count() < args.deliver:
            if batch.filter(status="failed").exists() or cluster.poll() is not None:
                raise SystemExit(
                    "delivery failed: " + str(batch.exclude(status="sent").values("status", "last_reply")[:3])
                )
            time.sleep(0.1)
        times = batch.aggregate(first=Min("created_at"), last=Max("sent_at"))
        print(
            f"{args.deliver} messages from 50 sessions through max_conns=5: first accept to last delivery "
            f"{(times['last'] - times['first']).total_seconds():.1f} s",
            flush=True,
        )
    finally:
        relay.terminate()
        os.killpg(cluster.pid, 9)
        cluster.wait()
        sink.stop()


def queued_backend(args) -> None:
    """QueuedEmailBackend.send_messages of 1,000 messages, commit included, best of rounds."""
    from django.core.mail import EmailMessage, get_connection
    from django.db import transaction

    body = "Your order shipped today. " * 40
    best = float("inf")
    for round_ in range(args.rounds):
        messages = [
            EmailMessage(f"Order {round_}-{n}", body, "shop@example.test", [f"customer{n}@example.test"])
            for n in range(1000)
        ]
        started = time.perf_counter()
        with transaction.atomic():
            get_connection("smtp_settings.backends.QueuedEmailBackend").send_messages(messages)
        best = min(best, time.perf_counter() - started)
    print(f"QueuedEmailBackend.send_messages, 1,000 messages in one transaction: {best:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/relaydeck_bench_relay")
    parser.add_argument("--deliver", type=int, default=1000, help="messages for the delivery time")
    parser.add_argument("--no-deliver", action="store_true", help="accept rates only")
    args = parser.parse_args()
    bench(args.database, args)
    if not args.no_deliver:
        deliver(args)
        queued_backend(args)


if __name__ == "__main__":
    main()
