"""One campaign through 1, 2 and 4 worker processes, on SQLite and on PostgreSQL + Redis, launch
to finished, and where the time goes (issue #11).

    python bench/scale.py [--subscribers 100000] [--small 20000] [--workers 1 2 4]
        [--database sqlite postgres] [--rounds 1] [--conns-per-worker 2]
        [--database-url URL] [--redis-url URL] [--profile]

Each run is a process of its own on a fresh database (bench/cluster_run.py, as for
bench/campaign.py): that many subscribers, one server entry for Postfix's smtp-sink on
loopback, and one `manage.py qcluster` with Q_WORKERS=N and CAMPAIGN_MAX_SENDERS=N, DEBUG=0.
The server entry allows two connections per worker (max_conns=2N), so the campaign gets N
senders (one per two connections), each sending on two connections whatever N is; and a
rate of 100,000/s, which never binds but takes the shared path for every message as in
bench/campaign.py (a turn from blocks reserved in the database on SQLite, in Redis on
PostgreSQL + Redis).

Per run: messages per second from launch to finished, and the CPU time per message of each
party, from /proc before and after: the qcluster's worker processes; its other processes
(sentinel, monitor, pusher: mostly the broker's polling); the PostgreSQL server (every
`postgres` process, with the backends they reaped, so connections that came and went count);
redis-server; and the sink. On SQLite the database's work is inside the workers. `busy` is all
of that over the machine's cores and the wall time: near 100% the machine is the limit. Then
the messages each worker sent, and each worker's peak resident memory (VmHWM), for the list
and for a small one (--small), so that memory flat in list size can be read off; on
PostgreSQL, the transactions committed per message and the sessions opened, as the server
counted them. Rounds alternate every configuration; the best of each counts. Ratios: 2
workers / 1 and 4 / 2.

PostgreSQL and Redis are the machine's shared servers: their CPU figures include anything else
using them meanwhile. Run it on a quiet machine.

`--profile` instead sends one campaign with one sender (as one worker does), in a process of
its own without a qcluster, calling `send_campaign` under cProfile: the task's thread and each
sending thread the backend starts get a profiler, merged at the end (the lease keeper's thread,
asleep but for a look twice a second, is left out). Prints the 25 functions first by cumulative
time and by own time, and microseconds per message with the profiler's overhead. Times are
wall time per thread, summed over threads: with two connections the two sending threads take
turns at the GIL, and the wait shows in the calls that let it go (socket, SQLite).
`--conns-per-worker 1` sends from one thread, without that wait.
"""

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from cluster_run import (
    make_campaign,
    open_fresh_database,
    processes_named,
    send_through_cluster,
    start_sink,
)

RATE_LIMIT = 100_000  # messages a second: never binding, but a turn taken per message
CORES = os.cpu_count() or 1


def run_one(database: str, subscribers: int, workers: int, args) -> None:
    """In a child process: one run on a fresh database; prints its figures as JSON."""
    open_fresh_database(database, args.database_url, args.redis_url, CAMPAIGN_MAX_SENDERS=str(workers))
    sink = start_sink()
    measure = {"sink": lambda: [sink.process.pid]}
    if database == "postgres":
        measure["postgres"] = lambda: processes_named("postgres")
        measure["redis"] = lambda: processes_named("redis-server", f":{urlsplit(args.redis_url).port or 6379}")
    try:
        campaign = make_campaign(
            subscribers, sink.port, max_conns=args.conns_per_worker * workers, rate_limit=RATE_LIMIT
        )
        counts_before = postgres_counts() if database == "postgres" else None
        run = send_through_cluster(campaign, workers, measure)
    finally:
        sink.stop()
    sent = campaign.deliveries.filter(status="sent").count()
    assert sent == subscribers, f"only {sent} of {subscribers} sent"
    worker_cpu = sum(run.cluster_cpu_s.get(pid, 0.0) for pid in run.workers)
    cpu_s = {"workers": worker_cpu, "q other": sum(run.cluster_cpu_s.values()) - worker_cpu, **run.cpu_s}
    figures = {
        "database": database,
        "subscribers": subscribers,
        "workers": workers,
        "elapsed_s": run.elapsed_s,
        "cpu_s": cpu_s,
        "sent_by_worker": [run.sent_by.get(pid, 0) for pid in run.workers],
        "peak_rss_mb": [run.peak_rss_mb.get(pid, 0.0) for pid in run.workers],
    }
    if counts_before:
        time.sleep(1)  # the qcluster's connections end and report
        figures["postgres"] = [after - before for before, after in zip(counts_before, postgres_counts(), strict=True)]
    print(json.dumps(figures), flush=True)


def postgres_counts() -> tuple[int, int]:
    """Transactions committed and sessions opened so far in this database, by PostgreSQL's
    statistics (a connection reports its transactions at least every second, and when it ends)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()


def run_child(database: str, subscribers: int, workers: int, args) -> dict:
    command = [sys.executable, __file__, "--one", database, str(subscribers), str(workers)]
    command += ["--conns-per-worker", str(args.conns_per_worker)]
    command += ["--database-url", args.database_url, "--redis-url", args.redis_url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


PARTIES = ["workers", "q other", "postgres", "redis", "sink"]
HEADER = (
    f"{'':<35}| CPU ms per message\n"
    f"{'database':<8} {'list':>7} {'wkr':>3} {'msg/s':>6} {'wall s':>6} | "
    + " ".join(f"{party:>8}" for party in PARTIES)
    + f" {'total':>6} | {'busy':>4} | sent by each worker; peak RSS of each (MB); PostgreSQL's count"
)


def row(run: dict) -> str:
    messages, elapsed = run["subscribers"], run["elapsed_s"]
    cpu = run["cpu_s"]
    per_message = " ".join(f"{cpu[party] / messages * 1000:8.3f}" if party in cpu else f"{'-':>8}" for party in PARTIES)
    total = sum(cpu.values())
    sent = "/".join(str(n) for n in run["sent_by_worker"])
    rss = "/".join(f"{mb:.0f}" for mb in run["peak_rss_mb"])
    if "postgres" in run:
        transactions, sessions = run["postgres"]
        rss += f"; {transactions / messages:.2f} transactions/msg, {sessions} sessions"
    return (
        f"{run['database']:<8} {messages:>7} {run['workers']:>3} {messages / elapsed:6.0f} {elapsed:6.1f} | "
        f"{per_message} {total / messages * 1000:6.3f} | {total / elapsed / CORES:4.0%} | {sent}; {rss}"
    )


def load_average() -> str:
    """Other work on the machine skews every figure: say how much there was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rate(run: dict) -> float:
    return run["subscribers"] / run["elapsed_s"]


def compare(args) -> None:
    sizes = [args.subscribers, *([args.small] if args.small else [])]
    configurations = [(db, size, n) for db in args.database for size in sizes for n in args.workers]
    best: dict[tuple, dict] = {}
    print(
        f"Launch to finished, one campaign, smtp-sink on loopback, {CORES} cores; server entry: "
        f"max_conns {args.conns_per_worker} per worker, rate {RATE_LIMIT:,}/s; "
        f"Q_WORKERS = CAMPAIGN_MAX_SENDERS = workers (wkr)"
    )
    print(f"load average before: {load_average()}")
    print(HEADER, flush=True)
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}", flush=True)
        for configuration in configurations:
            run = run_child(*configuration, args)
            print(row(run), flush=True)
            if configuration not in best or rate(run) > rate(best[configuration]):
                best[configuration] = run
    print(f"load average after: {load_average()}")
    print(f"\nBest of {args.rounds} round(s):\n{HEADER}")
    for configuration in configurations:
        print(row(best[configuration]))
    print()
    for db in args.database:
        by_workers = {n: rate(best[(db, args.subscribers, n)]) for n in args.workers}
        pairs = zip(args.workers, args.workers[1:], strict=False)
        ratios = ", ".join(
            f"{more}/{fewer} workers {by_workers[more] / by_workers[fewer]:.2f}x" for fewer, more in pairs
        )
        print(f"msg/s ratios, {db}, {args.subscribers} subscribers: {ratios}")
    if args.small:
        print(f"\nPeak RSS per worker (MB), {args.subscribers} vs {args.small} subscribers:")
        for db in args.database:
            for n in args.workers:
                large, small = (best[(db, size, n)]["peak_rss_mb"] for size in (args.subscribers, args.small))
                print(f"  {db:<8} {n} workers: {max(large):.0f} vs {max(small):.0f} (largest worker)")


def profile_one(database: str, args) -> None:
    """In a child process: one campaign sent by `send_campaign` in this process, profiled."""
    open_fresh_database(
        database, args.database_url, args.redis_url, CAMPAIGN_MAX_SENDERS="1", CAMPAIGN_TASK_BUDGET_S="86400"
    )
    from django.utils import timezone

    from campaigns.models import Campaign
    from campaigns.sending.loop import send_campaign
    from smtp_settings.pool import close_all_pools

    sink = start_sink()
    try:
        campaign = make_campaign(args.subscribers, sink.port, max_conns=args.conns_per_worker, rate_limit=RATE_LIMIT)
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING, started_at=timezone.now())
        profiles = _profile_sending_threads()
        main = cProfile.Profile()
        started = time.perf_counter()
        main.runcall(send_campaign, campaign.pk)
        elapsed = time.perf_counter() - started
        close_all_pools()
    finally:
        sink.stop()
    sent = campaign.deliveries.filter(status="sent").count()
    assert sent == args.subscribers, f"only {sent} of {args.subscribers} sent"
    stats = pstats.Stats(main, stream=sys.stdout)
    for profile in profiles:
        stats.add(profile)
    print(f"\n{database}: send_campaign for {sent} messages, {args.conns_per_worker} connection(s), under cProfile:")
    print(f"{elapsed:.1f} s, {elapsed / sent * 1e6:.0f} µs per message (wall), {len(profiles)} sending threads besides")
    for order in ("cumulative", "tottime"):
        stats.sort_stats(order).print_stats(25)
    if args.profile_out:
        stats.dump_stats(args.profile_out)


def _profile_sending_threads() -> list[cProfile.Profile]:
    """From now on each sending thread the backend starts runs under a profiler of its own;
    returns the list that gathers their profiles as they end."""
    from smtp_settings.backends import RotatingEmailBackend

    finished: list[cProfile.Profile] = []
    work_in_thread = RotatingEmailBackend._work_in_thread

    def profiled(backend, *args) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            work_in_thread(backend, *args)
        finally:
            profile.disable()
            finished.append(profile)

    RotatingEmailBackend._work_in_thread = profiled
    return finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20_000, help="a smaller list for peak memory (0: none)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--database", choices=["sqlite", "postgres"], nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--conns-per-worker", type=int, default=2, help="the server's max_conns is this times workers")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/relaydeck_bench_scale")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--profile", action="store_true", help="profile one sender in process instead")
    parser.add_argument("--profile-out", help="with --profile: also save the merged profile here (pstats)")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--profile-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        database, subscribers, workers = args.one
        return run_one(database, int(subscribers), int(workers), args)
    if args.profile_one:
        return profile_one(args.profile_one, args)
    if args.profile:
        for database in args.database:
            command = [sys.executable, __file__, "--profile-one", database, "--subscribers", str(args.subscribers)]
            command += ["--conns-per-worker", str(args.conns_per_worker)]
            command += ["--database-url", args.database_url, "--redis-url", args.redis_url]
            if args.profile_out:
                command += ["--profile-out", f"{args.profile_out}.{database}"]
            subprocess.run(command, check=True)
        return None
    return compare(args)


if __name__ == "__main__":
    main()
