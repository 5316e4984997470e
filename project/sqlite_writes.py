"""One writer at a time per process on SQLite, queued on a Python lock.

SQLite lets one connection write at a time. A thread that finds the write lock taken waits in
SQLite's busy handler, which sleeps 1 ms, 2 ms, 5 ms… between tries: with a sender's threads
each writing once per message (the final-dot fence, a rate turn), those sleeps cost more than
the writes. Queued here instead, the next writer starts the moment the last one commits.
SQLite still makes the writes atomic across processes. Inside a transaction (which may hold
SQLite's write lock already) it does not wait: a thread waiting here for that lock would
wait for us. On other databases it does nothing.
"""

import contextlib
import threading

from django.db import connection

_writer = threading.Lock()


def one_writer():
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        return contextlib.nullcontext()
    return _writer
