"""A whole campaign, launch to finished, through real django-q2 workers, on SQLite.

    python bench/campaign.py [--subscribers 100000 10000] [--sink smtp-sink|sandbox]

For each list size: a fresh SQLite database, that many subscribers, one SMTP server entry
pointing at a no-limit sink on loopback (Postfix's smtp-sink, as in bench/backend.py), a
`manage.py qcluster` started, the campaign launched, and the clock stopped when it is
finished. Prints messages/second and the peak resident memory (VmHWM) of each qcluster
process; the largest is the worker that sent. Checks that the sink saw every message.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cluster_pids(leader: int) -> list[int]:
    """The qcluster process and everything it started (same process group)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == leader:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                pass
    return pids


def run_one(subscribers: int, sink_kind: str) -> None:
    """In a child process with its own database: set up, launch, time, measure."""
    var_dir = tempfile.mkdtemp(prefix="relaydeck-bench-campaign-")
    os.environ.update(RELAYDECK_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="project.settings", DEBUG="1")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from backend import Sink
    from django.core.management import call_command

    from campaigns.models import Campaign, MailingList, Subscriber
    from smtp_settings.models import SmtpServer

    call_command("migrate", verbosity=0)
    sink = Sink(sink_kind, 0)
    mailing_list = MailingList.objects.create(name="bench")
    through = Subscriber.lists.through
    for start in range(0, subscribers, 5000):
        batch = Subscriber.objects.bulk_create(
            [
                Subscriber(email=f"reader{n}@example.test", name=f"Reader {n}", attributes={"city": "Lisbon"})
                for n in range(start, min(start + 5000, subscribers))
            ]
        )
        through.objects.bulk_create([through(subscriber_id=s.pk, mailinglist_id=mailing_list.pk) for s in batch])
    server = SmtpServer.objects.create(
        name="sink", host="127.0.0.1", port=sink.port, tls="none", auth_protocol="none", max_conns=4
    )
    campaign = Campaign.objects.create(
        name="bench",
        subject="Hello {{ subscriber.name }}",
        from_email="News <news@example.test>",
        html_body="<h1>Hello {{ subscriber.name }}</h1>" + "<p>Lorem ipsum dolor sit amet, consectetur.</p>" * 30,
    )
    campaign.lists.add(mailing_list)
    campaign.servers.add(server)

    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=os.environ | {"Q_WORKERS": "2"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # the cluster starts
        started = time.perf_counter()
        campaign.launch()
        peaks: dict[int, float] = {}
        while Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk) != "finished":
            time.sleep(0.25)
            for pid in cluster_pids(worker.pid):
                with contextlib.suppress(FileNotFoundError):
                    peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mb(pid))
        elapsed = time.perf_counter() - started
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
        sink.stop()
    sent = campaign.deliveries.filter(status="sent").count()
    assert sent == subscribers, f"only {sent} of {subscribers} sent"
    print(
        f"{subscribers:>7} subscribers: {elapsed:6.1f} s, {subscribers / elapsed:6.0f} msg/s, "
        f"peak RSS per qcluster process (MB): {', '.join(f'{mb:.0f}' for mb in sorted(peaks.values()))}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100_000, 10_000])
    parser.add_argument("--sink", choices=["smtp-sink", "sandbox"], default="smtp-sink")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args.one, args.sink)
    print("Launch to finished, SQLite, django-q2 ORM broker, one server entry (max_conns 4), no-limit sink:")
    for count in args.subscribers:
        subprocess.run([sys.executable, __file__, "--one", str(count), "--sink", args.sink], check=True)


if __name__ == "__main__":
    main()
