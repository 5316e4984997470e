"""Checking an AUTH login (PLAIN or LOGIN) against the relay credentials made in the dashboard.

The password hasher (Django's PBKDF2) costs about half a second of CPU a check, on purpose. An
application that opens a connection per message and logs in each time would pay that per
message, so a successful check is remembered in this process's memory: for the credential and
its current password hash, a salted SHA-256 of the password. A repeat login costs a lookup
and a constant-time comparison; a changed password, a deleted or re-created credential has
another hash or id, so its old entry is never found again. Only successes are remembered: a
wrong password, like an unknown username (against a dummy hash), always pays the hasher, so
that how long an answer takes tells nothing.

The hasher's threads take at most `max_pending` checks at a time, running or waiting; beyond
that a login is answered "try again later" (`Busy`). Logins of one credential that arrive
while its check runs wait for it instead of queuing a check each: an application opening 250
connections at once after the relay restarted costs one check, not 250.
"""

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import DatabaseError, connection

from smtp_settings.models import RelayCredential

MAX_PENDING_CHECKS = 20  # password hasher jobs, running or waiting (2 threads: ~6 s for the last)
MAX_REMEMBERED = 10_000  # successful logins kept; the oldest goes first


class Busy(Exception):
    """Too many logins are waiting for the password hasher."""


@dataclass(frozen=True)
class Sender:
    """Who hands messages over in a session: a credential's username, or a trusted client's
    address. Its mail goes out through the servers of `route` (ids; empty: the default route).
    A credential's id and password hash are those it logged in with: a message is accepted
    only while the credential still has them (see writer.py)."""

    name: str
    route: tuple[int, ...] = ()
    credential_id: int | None = None
    password_hash: str = ""


@dataclass(frozen=True)
class _Unverified:
    """A login the hasher has to check: the credential of its username, if there is one."""

    credential: RelayCredential | None
    password: str

    @property
    def key(self) -> tuple[int, str] | None:
        return (self.credential.pk, self.credential.password_hash) if self.credential else None


def _sender(credential: RelayCredential) -> Sender:
    route = tuple(credential.servers.order_by("pk").values_list("pk", flat=True))
    return Sender(credential.username, route, credential.pk, credential.password_hash)


class Logins:
    """The relay's AUTH checks (see the module docstring). `authenticate` runs on the relay's
    event loop; the database and the hasher are used from threads of their own."""

    def __init__(self, max_pending: int = MAX_PENDING_CHECKS):
        self.max_pending = max_pending
        self._pending = 0  # hasher jobs; touched on the event loop only
        self._checking: dict[tuple[int, str], asyncio.Future] = {}  # credential key: its check running
        self._remembered: dict[tuple[int, str], tuple[bytes, bytes]] = {}  # key: (salt, SHA-256)
        self._lock = threading.Lock()  # for _remembered, used from both pools' threads
        self._lookups = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-login")
        self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-hasher")

    def shutdown(self) -> None:
        self._lookups.shutdown()
        self._hasher.shutdown()

    async def authenticate(self, login: bytes, password: bytes) -> Sender | None:
        """The sender these are the login of, if an enabled credential has this username and
        password (UTF-8, as RFC 4954 has it); None if not. Raises Busy, or DatabaseError."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._lookups, self._look_up, login, password)
        if isinstance(found, _Unverified) and (running := self._checking.get(found.key)):
            await asyncio.wait([running])  # it may be this very password: then it is remembered
            found = await loop.run_in_executor(self._lookups, self._look_up, login, password)
        if not isinstance(found, _Unverified):
            return found
        if self._pending >= self.max_pending:
            raise Busy
        self._pending += 1
        key = found.key  # as it is now: the check may rehash the password
        checked = None
        if key and key not in self._checking:
            checked = self._checking[key] = loop.create_future()
        try:
            return await loop.run_in_executor(self._hasher, self._verify, found, password)
        finally:
            self._pending -= 1
            if checked:
                del self._checking[key]
                checked.set_result(None)

    def _look_up(self, login: bytes, password: bytes) -> Sender | _Unverified | None:
        """A remembered login's sender; else what the hasher has to check (None: not UTF-8)."""
        try:
            username, secret = login.decode(), password.decode()
        except UnicodeDecodeError:
            return None
        with closed_on_error():
            credential = RelayCredential.objects.filter(username=username, enabled=True).first()
            if credential is None or not self._recalls(credential, password):
                return _Unverified(credential, secret)
            credential.mark_used()
            return _sender(credential)

    def _verify(self, found: _Unverified, password: bytes) -> Sender | None:
        credential = found.credential
        if credential is None:
            RelayCredential().set_password(found.password)  # the hasher's time all the same
            return None
        with closed_on_error():
            if not credential.check_password(found.password):  # which may upgrade the hash
                return None
            self._remember(credential, password)
            credential.mark_used()
            return _sender(credential)

    def _recalls(self, credential: RelayCredential, password: bytes) -> bool:
        with self._lock:
            remembered = self._remembered.get((credential.pk, credential.password_hash))
        if remembered is None:
            return False
        salt, digest = remembered
        return hmac.compare_digest(hashlib.sha256(salt + password).digest(), digest)

    def _remember(self, credential: RelayCredential, password: bytes) -> None:
        salt = secrets.token_bytes(16)
        with self._lock:
            for key in [key for key in self._remembered if key[0] == credential.pk]:
                del self._remembered[key]  # an older password's
            if len(self._remembered) >= MAX_REMEMBERED:
                del self._remembered[next(iter(self._remembered))]
            self._remembered[(credential.pk, credential.password_hash)] = (
                salt,
                hashlib.sha256(salt + password).digest(),
            )


@contextlib.contextmanager
def closed_on_error():
    """Close this thread's database connection after a database error: it opens a fresh one
    next time."""
    try:
        yield
    except DatabaseError:
        connection.close()
        raise
