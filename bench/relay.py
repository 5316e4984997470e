"""Messages per second the SMTP relay accepts, committed to the outbox, from 1 and 50 clients.

    python bench/relay.py [--messages 2000] [--sessions 1 50] [--rounds 2] [--database sqlite|postgres]
                          [--modes per-message kept login]

What it measures: a real `manage.py smtp_relay` on a fresh database (SQLite by default, the
issue's target: 500 messages a second) takes ~2 KB messages from Postfix's smtp-source (C, so
the client costs next to nothing; unpacked into var/bench/ with smtp-sink on first use) from a
trusted address, without AUTH, as the chat server of issue 12 sends. Each run sends
`--messages` over S sessions at once, both ways applications do: a new connection for every
message, and one connection kept for all of a session's messages. A third mode logs in on
every connection (AUTH PLAIN with a relay login, hashed by Django's PBKDF2 as in production),
as an application with a relay login that opens a connection per message does: smtp-source
cannot log in, so an asyncio client of this script's speaks SMTP there (its own CPU time is
not the relay's, but it may bound the messages a second). A message counts once the
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
import asyncio
import base64
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import postfix
from cluster_run import ROOT, cpu_s, open_fresh_database

MODES = {"per-message": "connection per message", "kept": "connection kept", "login": "connection per message, AUTH"}
SMTP_SOURCE_OPTIONS = {"per-message": [], "kept": ["-d"]}
USERNAME, PASSWORD = "bench", "a relay login for the benchmark"
MESSAGE = (
    b"From: app@example.test\r\nTo: reader@example.test\r\nSubject: Your order\r\n\r\n" + (b"x" * 76 + b"\r\n") * 25
)


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


def run_smtp_source(port: int, sessions: int, messages: int, mode: str) -> None:
    binary, env = smtp_source()
    command = [str(binary), *SMTP_SOURCE_OPTIONS[mode], "-s", str(sessions), "-m", str(messages), "-l", "2000", "-N"]
    command += ["-f", "app@example.test", "-t", "reader@example.test", "-S", "Your order", f"127.0.0.1:{port}"]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


async def _reply(reader: asyncio.StreamReader, expected: bytes) -> None:
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    if not line.startswith(expected):
        raise SystemExit(f"the relay answered {line!r}, not {expected.decode()}")


async def _logging_in(port: int, messages: int) -> None:
    """One client session: `messages` connections, each logging in and sending one message."""
    login = b"AUTH PLAIN " + base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode())
    exchange = [
        (b"EHLO bench.example.test", b"250"),
        (login, b"235"),
        (b"MAIL FROM:<app@example.test>", b"250"),
        (b"RCPT TO:<reader@example.test>", b"250"),
        (b"DATA", b"354"),
        (MESSAGE + b".", b"250"),  # ~2 KB, as smtp-source's
        (b"QUIT", b"221"),
    ]
    for _ in range(messages):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _reply(reader, b"220")
        for line, expected in exchange:
            writer.write(line + b"\r\n")
            await _reply(reader, expected)
        writer.close()
        await writer.wait_closed()


def run_logging_in(port: int, sessions: int, messages: int) -> None:
    async def all_sessions():
        share, extra = divmod(messages, sessions)
        await asyncio.gather(*(_logging_in(port, share + (n < extra)) for n in range(sessions)))

    asyncio.run(all_sessions())


def run(port: int, relay_pid: int, sessions: int, messages: int, mode: str) -> tuple[float, float]:
    """(messages a second, relay CPU ms a message) for one run; all must be queued."""
    from smtp_settings.models import OutboxMessage

    before, cpu_before = OutboxMessage.objects.count(), cpu_s(relay_pid)
    started = time.perf_counter()
    if mode == "login":
        run_logging_in(port, sessions, messages)
    else:
        run_smtp_source(port, sessions, messages, mode)
    elapsed = time.perf_counter() - started
    queued = OutboxMessage.objects.count() - before
    if queued != messages:
        raise SystemExit(f"{queued} of {messages} messages are in the outbox")
    return messages / elapsed, (cpu_s(relay_pid) - cpu_before) * 1000 / messages


def make_login() -> None:
    """The relay login of the AUTH mode, hashed as in production; its first login pays the
    hasher (about half a second), the others are remembered (smtp_settings/relay/credentials.py)."""
    from smtp_settings.models import RelayCredential

    credential = RelayCredential(name=USERNAME, username=USERNAME)
    credential.set_password(PASSWORD)
    credential.save()


def bench(database: str, args) -> None:
    open_fresh_database(database, args.database_url, "", RELAY_TRUSTED_NETWORKS="127.0.0.1")
    make_login()
    relay, port = start_relay()
    try:
        for sessions in args.sessions:
            for mode in args.modes:
                best = max(run(port, relay.pid, sessions, args.messages, mode) for _ in range(args.rounds))
                print(
                    f"{database:7} {sessions:3} sessions, {MODES[mode]:29} {best[0]:7.0f} msg/s accepted, "
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

    OutboxMessage.objects.all().delete()  # what the accept rates queued would go out first
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
        run(port, relay.pid, 50, args.deliver, "per-message")
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
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
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
