"""Who holds a lease: a process named "host:pid", and whether such a holder is gone.

Leases (a campaign's, a connection slot's) name their holder this way, so that a process
that died on this host gives its leases back at once instead of after they run out."""

import os
import socket


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_gone(holder: str) -> bool:
    """True if `holder` was a process on this host that has exited (a holder on another host
    is never known to be gone: its lease runs out instead)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False
