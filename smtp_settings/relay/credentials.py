"""Checking an AUTH login (PLAIN or LOGIN) against the relay credentials made in the dashboard."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import DatabaseError, connection
from django.utils import timezone

from project.sqlite_writes import one_writer
from smtp_settings.models import RelayCredential

LAST_USED_STEP = timedelta(minutes=1)  # a credential's last_used_at is written at most this often


@dataclass(frozen=True)
class Sender:
    """Who hands messages over in a session: a credential's username, or a trusted client's
    address. Its mail goes out through the servers of `route` (ids; empty: the default route)."""

    name: str
    route: tuple[int, ...] = ()


def authenticate(login: bytes, password: bytes) -> Sender | None:
    """The sender these are the login of, if an enabled credential has this username and
    password (UTF-8, as RFC 4954 has it). An unknown username costs the password hasher's time
    all the same, so that how long the answer takes does not tell which usernames exist.
    Blocking (the hasher is slow on purpose): run it off the event loop."""
    try:
        username, secret = login.decode(), password.decode()
    except UnicodeDecodeError:
        return None
    try:
        credential = RelayCredential.objects.filter(username=username, enabled=True).first()
        if credential is None:
            RelayCredential().set_password(secret)
            return None
        if not credential.check_password(secret):
            return None
        route = tuple(credential.servers.order_by("pk").values_list("pk", flat=True))
        _mark_used(credential)
    except DatabaseError:
        connection.close()  # this thread opens a fresh one next time
        raise
    return Sender(credential.username, route)


def _mark_used(credential: RelayCredential) -> None:
    now = timezone.now()
    if credential.last_used_at is None or now - credential.last_used_at >= LAST_USED_STEP:
        with one_writer():
            RelayCredential.objects.filter(pk=credential.pk).update(last_used_at=now)
