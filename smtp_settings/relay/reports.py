"""Bounce reports at the relay: DSNs (RFC 3464) and ARF complaint reports (RFC 5965) sent to
a VERP address of a server's bounce domain, bounces+<token>@<domain>.

Reporting servers send them from anywhere, without AUTH and usually from the null sender, so
the relay takes them from any client: a recipient is a bounce address when its token's
signature holds (verp.py) and its domain is the bounce domain of some server entry (case does
not matter). A forged token or a domain no server bounces to gets 550 5.1.1; a transaction
holds bounce addresses only (server.py).

The database is used from threads of their own, never from the event loop: looking a domain
up, and taking a report in (intake.py): reading it, then recording what it says, or keeping
it as not understood, in one transaction. The answer to the final dot is 250 once that transaction
is committed, 451 if it failed (then nothing of it was written, and the reporting server
keeps its copy and tries again). At most `max_pending` jobs run or wait; beyond that, and for
a report not taken up within `deadline_s`, the answer is 451 and nothing is written. A report
taken up is answered with its commit's outcome however long that takes (a 451 then would
make the reporting server send it again: a duplicate), and one whose client left before it
was taken up is not written.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import transaction

from project.sqlite_writes import one_writer
from smtp_settings.bounces import intake, verp
from smtp_settings.models import Bounce, SmtpServer
from smtp_settings.relay.credentials import closed_on_error
from smtp_settings.relay.writer import DEADLINE_S

log = logging.getLogger(__name__)

MAX_PENDING = 20  # lookups and reports, running or waiting (two threads)
BUSY = "451 4.3.2 Too many bounce reports at once; please try again later"
NOT_RECORDED = "451 4.3.0 The report could not be recorded; please try again later"
NOT_TAKEN = "451 4.3.0 The relay is too busy to record the report; please try again later"
CANNOT_CHECK = "451 4.3.0 The bounce address cannot be checked now; please try again later"
UNKNOWN_BOUNCE_ADDRESS = "550 5.1.1 No such bounce address"


class Busy(Exception):
    """Too many jobs are running or waiting."""


class NotTaken(Busy):
    """A job was not taken up within the deadline: it was dropped."""


class Reports:
    """The relay's bounce addresses and reports (see the module docstring): its coroutines run
    on the relay's event loop."""

    def __init__(self, max_pending: int = MAX_PENDING, deadline_s: float = DEADLINE_S):
        self.max_pending = max_pending
        self.deadline_s = deadline_s
        self._pending = 0  # touched on the event loop only
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-reports")

    def shutdown(self) -> None:
        """Finish the jobs taken up, drop the others (their sessions are gone by then)."""
        self._threads.shutdown(cancel_futures=True)

    async def is_bounce_address(self, address: str, may_relay: bool) -> bool | None:
        """Whether `address` is a bounce address of ours; None if it is another recipient,
        which only a client that `may_relay` sends to (for any other, a bounces+ address of
        ours or not is a bounce address or nothing). Raises Busy, or DatabaseError."""
        local, _, domain = address.rpartition("@")
        if not local.lower().startswith(verp.LOCAL_PREFIX):
            return None
        signed = verp.reference_of(address) is not None
        if not signed and not may_relay:
            return False  # forged, whatever its domain: no need to look it up
        if await self._run(_bounces_to, domain):
            return signed
        return None if may_relay else False

    async def take(self, data: bytes, recipients: list[str], client: str) -> str:
        """The reply for the final dot of a report sent to these bounce addresses."""
        try:
            return await self._run(_recorded, data, recipients, client)
        except Busy as busy:
            log.warning("Relay: a bounce report of %d bytes from %s was answered 451: %r", len(data), client, busy)
            return NOT_TAKEN if isinstance(busy, NotTaken) else BUSY
        except Exception:
            log.exception("Relay: a bounce report of %d bytes from %s could not be recorded", len(data), client)
            return NOT_RECORDED

    async def _run(self, job: Callable, *args):
        """`job(*args)`, on one of the threads, once taken up within the deadline."""
        if self._pending >= self.max_pending:
            raise Busy
        self._pending += 1
        try:
            running = self._threads.submit(job, *args)
            answer = asyncio.wrap_future(running)
            try:
                return await asyncio.wait_for(asyncio.shield(answer), self.deadline_s)
            except TimeoutError:
                if running.cancel():  # not taken up yet: it never will be
                    raise NotTaken(f"not taken up within {self.deadline_s} s") from None
                return await answer
            except asyncio.CancelledError:  # its client left: a job not taken up is not done
                running.cancel()
                raise
        finally:
            self._pending -= 1


def _bounces_to(domain: str) -> bool:
    with closed_on_error():
        return bool(domain) and SmtpServer.objects.filter(bounce_domain__iexact=domain).exists()


def _recorded(data: bytes, recipients: list[str], client: str) -> str:
    with closed_on_error():
        reading = intake.read(data, recipients)  # before the write lock: reading may take a while
        with one_writer(), transaction.atomic():
            bounces = reading.record(Bounce.Source.LISTENER)
    kinds = Counter(bounce.kind for bounce in bounces)
    log.info(
        "Relay: a bounce report of %d bytes from %s for %s: %s",
        len(data),
        client,
        ", ".join(sorted({ref for ref in map(verp.reference_of, recipients) if ref})),
        ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
    )
    more = f" and {len(bounces) - 1} more" if len(bounces) > 1 else ""
    return f"250 2.0.0 Ok: recorded as bounce {bounces[0].pk}{more}"
