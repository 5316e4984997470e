"""Microseconds per operation of the shared-limit stores, one caller at a time.

    python bench/limit_store.py [--ops 2000]

Measures DatabaseStore on the database in settings (SQLite in a fresh temporary folder unless
DATABASE_URL is set: run it again with DATABASE_URL for PostgreSQL) and RedisStore when
REDIS_URL is set, for what a sender does per message or connection: a take_slot + give_slot
pair, a reserve, and a take_quota over two windows (an hour and a day, never full). Each store
works on a server id of its own and forgets it at the end (Redis keys under a fresh prefix).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("RELAYDECK_VAR_DIR", tempfile.mkdtemp(prefix="relaydeck-bench-"))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from smtp_settings.limit_stores import DatabaseStore, LimitStore, Window  # noqa: E402
from smtp_settings.processes import me  # noqa: E402

SERVER_ID = 2_000_000_000  # no real server has it
WINDOWS = [Window("hour", 3600, 10**9), Window("day", 86400, 10**9)]


def per_op_us(ops: int, operation) -> float:
    operation()  # warm up: scripts loaded, rows made, connections open
    started = time.perf_counter()
    for _ in range(ops):
        operation()
    return (time.perf_counter() - started) / ops * 1e6


def measure(name: str, limit_store: LimitStore, ops: int) -> None:
    owner = me()

    def slot_pair():
        number = limit_store.take_slot(SERVER_ID, owner, 5, time.time() + 30, time.time())
        limit_store.give_slot(SERVER_ID, owner, number)

    try:
        figures = {
            "take_slot + give_slot": per_op_us(ops, slot_pair),
            "reserve": per_op_us(ops, lambda: limit_store.reserve(SERVER_ID, 0.001, time.time())),
            "take_quota, 2 windows": per_op_us(ops, lambda: limit_store.take_quota(SERVER_ID, 1, WINDOWS, time.time())),
        }
    finally:
        limit_store.forget(SERVER_ID)
    for operation, us in figures.items():
        print(f"{name:<22} {operation:<22} {us:8.0f} µs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    measure(f"Database ({connection.vendor})", DatabaseStore(), args.ops)
    if settings.REDIS_URL:
        from smtp_settings.redis_store import RedisStore

        redis_store = RedisStore(settings.REDIS_URL, prefix=f"bench:{uuid4()}:")
        try:
            measure("Redis", redis_store, args.ops)
        finally:
            redis_store.drop_owner(me())  # the index of the servers it touched


if __name__ == "__main__":
    main()
