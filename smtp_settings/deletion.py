"""Deleting a server entry, and saying first what uses it.

This app does not know campaigns: those that use a server answer `server_users` (see
campaigns/servers.py), and may refuse its deletion by raising ServerInUse from a `pre_delete`
receiver. Django sends `pre_delete` inside the transaction that deletes the entry, however it
is deleted (this page, the admin, a shell), so a receiver's check and the delete are one: it
locks the rows it checks, and a campaign launched meanwhile either is seen running, or waits
and finds the server gone from its list.

Relay logins and API tokens that name the server are this app's own users: they lose it from
their list (with no server left, their mail takes the relay's default route).
"""

from dataclasses import dataclass

from django.db import transaction
from django.dispatch import Signal
from django.urls import reverse

from smtp_settings.models import ApiToken, RelayCredential, SmtpServer

# Sent with server=SmtpServer; a receiver returns a list of ServerUser.
server_users = Signal()


@dataclass(frozen=True)
class ServerUser:
    kind: str  # "Campaign", "Relay login"
    name: str
    url: str
    state: str  # what becomes of it, or why it holds the server
    busy: bool = False  # the server may not be deleted while it is


class ServerInUse(Exception):
    """Raised, inside the deleting transaction, by whoever may not lose the server now."""

    def __init__(self, server: SmtpServer, busy: list[ServerUser]):
        self.busy = busy
        names = ", ".join(f"“{user.name}”" for user in busy)
        super().__init__(
            f"“{server.name}” was not deleted: {busy[0].kind.lower()}{'s' if len(busy) > 1 else ''} {names} "
            "still send through it. Let them finish or cancel them first, or disable the server instead: "
            "nothing is sent through a disabled server, and its settings stay."
        )


def users_of(server: SmtpServer) -> list[ServerUser]:
    """What uses the server: campaigns (as they answer) first, then relay logins and tokens."""
    users = [user for _, answer in server_users.send(sender=SmtpServer, server=server) for user in answer or ()]
    for model, kind in ((RelayCredential, "Relay login"), (ApiToken, "API token")):
        for access in model.objects.filter(servers=server, enabled=True).prefetch_related("servers"):
            alone = len(access.servers.all()) == 1
            state = "its mail takes the relay's default route" if alone else "its other servers carry its mail"
            users.append(ServerUser(kind, access.name, reverse("access:index"), state))
    return users


def delete_server(server: SmtpServer) -> None:
    """Delete the entry, or raise ServerInUse and delete nothing. Its own atomic block (a
    savepoint inside a caller's transaction): Django deletes without one, so a refusal would
    otherwise leave the caller's transaction broken."""
    with transaction.atomic():
        server.delete()
