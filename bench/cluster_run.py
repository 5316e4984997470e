"""What bench/campaign.py and bench/scale.py share: one campaign on a fresh database, sent by a
real `manage.py qcluster` to a no-limit sink on loopback, and what the processes involved used.

In a process of its own (Django is set up once, for the database given): `open_fresh_database`,
`start_sink`, `make_campaign`, then `send_through_cluster`.

CPU time comes from /proc: a process's own user and system time plus that of the children it
waited for. Read over a set of processes that holds their parents (a qcluster, PostgreSQL's
postmaster), the figure also counts children that came and went between two readings.
"""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
CLUSTER_START_S = 3  # the qcluster imports Django and forks its workers meanwhile


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [0] is field 3 (state), [1] the parent's pid."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User and system time used so far by the process and the children it waited for."""
    return sum(int(ticks) for ticks in _stat(pid)[11:15]) / CLOCK_TICKS_PER_S


def total_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_s(pid)
    return total


def _all_pids() -> Iterator[int]:
    return (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())


def cluster_pids(leader: int) -> list[int]:
    """The qcluster process and everything it started (same process group)."""
    pids = []
    for pid in _all_pids():
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == leader:
                pids.append(pid)
    return pids


def processes_named(command: str, argument: str = "") -> list[int]:
    """Processes running `command` whose command line holds `argument`."""
    pids = []
    for pid in _all_pids():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if Path(f"/proc/{pid}/comm").read_text().strip() != command:
                continue
            if argument in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(pid)
    return pids


def _children(parent: int, among: list[int]) -> list[int]:
    """The processes of `among` that `parent` started, oldest first."""
    stats = {}
    for pid in among:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            stats[pid] = _stat(pid)
    children = [pid for pid, fields in stats.items() if int(fields[1]) == parent]
    return sorted(children, key=lambda pid: int(stats[pid][19]))


def worker_pids(leader: int, workers: int) -> list[int]:
    """django-q2's worker processes: the qcluster's child (the sentinel) forks them first,
    then the monitor and the pusher."""
    pids = cluster_pids(leader)
    sentinel = next(pid for pid in _children(leader, pids) if _children(pid, pids))
    return _children(sentinel, pids)[:workers]


def fresh_postgres(url: str) -> None:
    """Drop and create the database of `url`, through the server's `postgres` database."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def open_fresh_database(database: str, database_url: str, redis_url: str, **settings: str) -> None:
    """Set Django up on a fresh database: SQLite in a new temporary folder (removed at exit),
    or the PostgreSQL database of `database_url` dropped and created again, with Redis at
    `redis_url` for the shared limits (under a key prefix of the run's own) and django-q2's
    queue (purged first). `settings` go into the environment, which a qcluster inherits."""
    var_dir = tempfile.mkdtemp(prefix="relaydeck-bench-")
    atexit.register(shutil.rmtree, var_dir, ignore_errors=True)
    os.environ.update(
        RELAYDECK_VAR_DIR=var_dir,
        DJANGO_SETTINGS_MODULE="project.settings",
        DEBUG="0",  # as in production: DEBUG's cursor wrapper records every query
        SECRET_KEY=uuid4().hex,
        LIMITS_KEY_PREFIX=f"relaydeck:bench:{uuid4().hex}:",
        **settings,
    )
    if database == "postgres":
        fresh_postgres(database_url)
        os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import django

    django.setup()
    from django.core.management import call_command
    from django_q.brokers import get_broker

    call_command("migrate", verbosity=0)
    get_broker().purge_queue()  # Redis keeps the queue across runs


def start_sink(kind: str = "smtp-sink"):
    """Postfix's smtp-sink (or the sandbox) on a free loopback port, as bench/backend.py runs it."""
    from backend import Sink

    return Sink(kind, 0)


def make_campaign(subscribers: int, port: int, **server_limits):
    """A list of `subscribers`, a server entry for the sink at `port` with `server_limits`,
    and a draft campaign of ~2 KB personalised messages to the list through that server."""
    from campaigns.models import Campaign, MailingList, Subscriber
    from smtp_settings.models import SmtpServer

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
        name="sink", host="127.0.0.1", port=port, tls="none", auth_protocol="none", **server_limits
    )
    campaign = Campaign.objects.create(
        name="bench",
        subject="Hello {{ subscriber.name }}",
        from_email="News <news@example.test>",
        html_body="<h1>Hello {{ subscriber.name }}</h1>" + "<p>Lorem ipsum dolor sit amet, consectetur.</p>" * 30,
    )
    campaign.lists.add(mailing_list)
    campaign.servers.add(server)
    return campaign


@dataclass
class ClusterRun:
    elapsed_s: float  # launch to finished
    cluster_cpu_s: dict[int, float]  # by qcluster process (with the children it waited for)
    peak_rss_mb: dict[int, float]  # by qcluster process
    workers: list[int]  # the worker processes' pids
    cpu_s: dict[str, float]  # by process set given as `measure`
    sent_by: dict[int, int]  # messages each worker process sent, as its senders recorded


def send_through_cluster(
    campaign, workers: int, measure: dict[str, Callable[[], list[int]]] | None = None
) -> ClusterRun:
    """Start `manage.py qcluster` with `workers` worker processes, launch the campaign and wait
    until it is finished; meanwhile, the CPU time of the qcluster's processes and of each set
    of processes in `measure` (found again at the end), and each qcluster process's peak RSS.
    Raises if the campaign stops short of finished or the qcluster dies."""
    from campaigns.models import Campaign

    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=os.environ | {"Q_WORKERS": str(workers)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    measure = measure or {}
    rows = Campaign.objects.filter(pk=campaign.pk)
    try:
        time.sleep(CLUSTER_START_S)
        cluster_before = {pid: cpu_s(pid) for pid in cluster_pids(cluster.pid)}
        before = {name: total_cpu_s(find()) for name, find in measure.items()}
        started = time.perf_counter()
        campaign.launch()
        peaks: dict[int, float] = {}
        while (status := rows.values_list("status", flat=True).get()) != Campaign.Status.FINISHED:
            if status != Campaign.Status.RUNNING or cluster.poll() is not None:
                reason = rows.values_list("pause_reason", flat=True).get()
                raise RuntimeError(f"the campaign is {status} ({reason}); qcluster exit code {cluster.poll()}")
            time.sleep(0.25)
            for pid in cluster_pids(cluster.pid):
                with contextlib.suppress(FileNotFoundError):
                    peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mb(pid))
        elapsed = time.perf_counter() - started
        cpu = {name: total_cpu_s(find()) - before[name] for name, find in measure.items()}
        cluster_cpu = {}
        for pid in cluster_pids(cluster.pid):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                cluster_cpu[pid] = cpu_s(pid) - cluster_before.get(pid, 0.0)
        worker_list = worker_pids(cluster.pid, workers)
        sent_by = _sent_by_process(campaign)
    finally:
        os.killpg(cluster.pid, 9)
        cluster.wait()
    return ClusterRun(elapsed, cluster_cpu, peaks, worker_list, cpu, sent_by)


def _sent_by_process(campaign, wait_s: float = 5) -> dict[int, int]:
    """Messages sent per process, once every sender has stopped (they stop just after the
    last one marks the campaign finished)."""
    deadline = time.monotonic() + wait_s
    while campaign.senders.filter(stopped_at=None).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sent_by: dict[int, int] = {}
    for owner, sent in campaign.senders.values_list("owner", "sent"):
        pid = int(owner.rsplit(":", 1)[1])
        sent_by[pid] = sent_by.get(pid, 0) + sent
    return sent_by
