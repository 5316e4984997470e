"""The SMTP relay, the outbox's main door: `python manage.py smtp_relay`.

`server.py` speaks SMTP (aiosmtpd): who may send, envelope checks, limits, STARTTLS.
`writer.py` writes what the sessions hand over to the outbox, many sessions' messages in one
transaction, and gives each session its reply: 250 only once its message is committed.
`credentials.py` checks an AUTH login against the relay credentials.
`reports.py` takes the bounce reports sent to a bounce domain's VERP addresses, from anyone.
"""


def listen_address(listen: str) -> tuple[str, int]:
    """The host and port of RELAY_LISTEN or --listen: "127.0.0.1:2587", "[::1]:2587" or
    "0.0.0.0:25". ValueError if it is none of those."""
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host, int(port)
