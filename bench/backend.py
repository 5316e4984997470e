"""Messages per second through each way of sending, side by side, against one fast SMTP sink.

    python bench/backend.py [--messages 20000] [--rounds 2] [--sink smtp-sink|sandbox] [--latency MS] [--inbox N]

What it measures: sending what a campaign sends. N ~2 KB messages, each to its own recipient
and with its own subject (so nothing parsed or encoded for one message serves the next, as
an address cache would with one recipient for all), go through (a) Django's stock SMTP
backend on one connection, (b) RotatingEmailBackend with max_conns=1 and =4, (c) a bare
smtplib loop. Every variant gets the same messages and renders each with
EmailMessage.message() as an application would; building the EmailMessage objects is not
timed, rendering, envelope parsing and the SMTP exchange are. Each line gives messages a
second (wall clock) and the CPU this process spent per message (all its threads): on a busy
machine the second figure moves less. Rounds alternate the variants and the best round of
each counts, so the ratios come from one run on one machine.

The sink is Postfix's smtp-sink (C, advertises PIPELINING), fetched from Debian's `postfix`
package into var/bench/ on first use; `--sink sandbox` uses the aiosmtpd sandbox in its own
process instead (slower: it measures the sandbox more than the clients).

A sink on loopback answers at once, so there the clients are bound by their own CPU (mostly
Django rendering each message). `--latency MS` makes the sandbox wait before every reply, as a
real provider does while it stores a message: that is where connections and pipelining pay.
`--inbox N` has the sandbox keep the last N messages in its inbox, as `make run`'s does.
"""

import argparse
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("RELAYDECK_VAR_DIR", tempfile.mkdtemp(prefix="relaydeck-bench-"))

import django  # noqa: E402

django.setup()

import postfix  # noqa: E402
from django.core.mail import EmailMessage, get_connection  # noqa: E402
from django.core.mail.backends.smtp import EmailBackend  # noqa: E402
from django.core.management import call_command  # noqa: E402

from smtp_settings.models import SmtpServer  # noqa: E402
from smtp_settings.pool import close_all_pools  # noqa: E402

BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 26)[:2000]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink:
    def __init__(self, kind: str, latency_ms: float, inbox: int):
        self.port = free_port()
        self.inbox: tempfile.TemporaryDirectory | None = None
        if kind == "smtp-sink":
            binary, env = postfix.tool("smtp-sink")
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            command = [str(binary), *user, f"127.0.0.1:{self.port}", "1024"]
        else:
            env = os.environ
            command = [sys.executable, str(ROOT / "manage.py"), "smtp_sandbox", "--port", str(self.port)]
            command += ["--pipelining", "--quiet", "--latency", str(latency_ms), "--inbox", str(inbox)]
            # An inbox of its own: not the one `make run`'s sandbox keeps, and gone after the run.
            self.inbox = tempfile.TemporaryDirectory(prefix="relaydeck-bench-inbox-")
            command += ["--inbox-dir", self.inbox.name]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        if self.inbox is not None:
            self.inbox.cleanup()


def messages(count: int) -> list[EmailMessage]:
    """What a campaign sends: each message to its own recipient, with its own subject."""
    return [
        EmailMessage(f"Weekly news for reader {n}", BODY, "news@example.test", [f"reader{n}@example.test"])
        for n in range(count)
    ]


def django_stock(port: int, batch: list[EmailMessage]) -> int:
    backend = EmailBackend(host="127.0.0.1", port=port, use_tls=False, use_ssl=False, username="", password="")
    sent = backend.send_messages(batch)
    backend.close()
    return sent


def bare_smtplib(port: int, batch: list[EmailMessage]) -> int:
    smtp = smtplib.SMTP("127.0.0.1", port)
    for message in batch:
        smtp.sendmail(message.from_email, message.recipients(), message.message().as_bytes(linesep="\r\n"))
    smtp.quit()
    return len(batch)


def rotating(conns: int):
    def send(port: int, batch: list[EmailMessage]) -> int:
        server, _ = SmtpServer.objects.update_or_create(
            name=f"bench-{conns}",
            defaults={"host": "127.0.0.1", "port": port, "tls": "none", "auth_protocol": "none", "max_conns": conns},
        )
        sent = get_connection("smtp_settings.backends.RotatingEmailBackend", server=server).send_messages(batch)
        close_all_pools()
        return sent

    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sink", choices=["smtp-sink", "sandbox"], default="smtp-sink")
    parser.add_argument("--latency", type=float, default=0, metavar="MS", help="sandbox only: wait before each reply")
    parser.add_argument("--inbox", type=int, default=0, metavar="N", help="sandbox only: keep the last N messages")
    args = parser.parse_args()
    if (args.latency or args.inbox) and args.sink != "sandbox":
        parser.error("--latency and --inbox need --sink sandbox")
    if args.sink == "smtp-sink" and not shutil.which("dpkg") and not (postfix.POSTFIX_DIR / "usr").exists():
        sys.exit("smtp-sink needs Debian's dpkg to unpack postfix; use --sink sandbox")
    call_command("migrate", verbosity=0)

    variants = {
        "django stock, 1 conn": django_stock,
        "rotating, 1 conn": rotating(1),
        "rotating, 4 conns": rotating(4),
        "bare smtplib loop": bare_smtplib,
    }
    best = dict.fromkeys(variants, (0.0, 0.0))  # (msg/s, CPU µs a message) of the fastest round
    sink = Sink(args.sink, args.latency, args.inbox)
    try:
        for round_number in range(1, args.rounds + 1):
            for name, send in variants.items():
                batch = messages(args.messages)
                started, cpu_started = time.perf_counter(), time.process_time()
                sent = send(sink.port, batch)
                rate = sent / (time.perf_counter() - started)
                cpu_us = (time.process_time() - cpu_started) / sent * 1e6
                assert sent == args.messages, f"{name}: only {sent} of {args.messages} sent"
                best[name] = max(best[name], (rate, cpu_us))
                print(f"round {round_number}  {name:<22} {rate:8.0f} msg/s  {cpu_us:6.0f} µs CPU/msg", flush=True)
    finally:
        sink.stop()

    stock = best["django stock, 1 conn"][0]
    sink_is = f" answering after {args.latency:g} ms" if args.latency else ""
    sink_is += " on loopback" + (f", keeping the last {args.inbox} in its inbox" if args.inbox else "")
    print(f"\n{args.messages} messages of ~2 KB to {args.sink}{sink_is}, best of {args.rounds} rounds:")
    for name, (rate, cpu_us) in best.items():
        print(f"  {name:<22} {rate:8.0f} msg/s  {cpu_us:6.0f} µs CPU/msg  {rate / stock:5.2f}x Django's stock backend")


if __name__ == "__main__":
    main()
