"""Which server sends a sender's next batch.

Smooth weighted round robin over the campaign's enabled servers, weighted by connection
capacity, skipping servers that could not be reached (for SERVER_DOWN_S) and servers waiting
for a quota window. Each sender keeps its own rotation; the shared limits keep the servers'
connections and rates right across all of them.
"""

import time

from campaigns.models import Campaign
from smtp_settings.models import SmtpServer

SERVER_DOWN_S = 60


class ServerRotation:
    def __init__(self, campaign: Campaign):
        self.campaign = campaign
        self.current: dict[int, float] = {}
        self.down_until: dict[int, float] = {}
        self.waiting: dict[int, tuple[float, str]] = {}  # server -> (until, epoch seconds; why)
        self.refresh()

    def refresh(self) -> None:
        """Read the campaign's enabled servers again: one disabled or deleted since the last
        batch sends no more, an edited one sends with its new settings."""
        self.servers = list(self.campaign.servers.filter(enabled=True).order_by("pk"))
        self.current = {server.pk: self.current.get(server.pk, 0.0) for server in self.servers}

    @staticmethod
    def weight(server: SmtpServer) -> int:
        return min(server.max_conns, server.learned_max_conns or server.max_conns)

    def next(self) -> SmtpServer | None:
        """The next server, or None while every server waits for a quota window."""
        now = time.monotonic()
        ready = [s for s in self.servers if self.waiting.get(s.pk, (0, ""))[0] <= time.time()]
        if not ready:
            return None
        up = [s for s in ready if self.down_until.get(s.pk, 0) <= now]
        if not up:
            return min(ready, key=lambda s: self.down_until[s.pk])
        total = sum(self.weight(s) for s in up)
        for server in up:
            self.current[server.pk] += self.weight(server)
        chosen = max(up, key=lambda s: self.current[s.pk])
        self.current[chosen.pk] -= total
        return chosen

    def mark_down(self, server: SmtpServer) -> bool:
        """Leave `server` out for a while; True if another one can take over."""
        self.down_until[server.pk] = time.monotonic() + SERVER_DOWN_S
        return any(self.down_until.get(s.pk, 0) <= time.monotonic() for s in self.servers)

    def wait(self, server: SmtpServer, until: float, reason: str) -> None:
        """Leave `server` out until its quota window has room (`until`, epoch seconds)."""
        self.waiting[server.pk] = (until, reason)

    def soonest(self) -> tuple[float, str]:
        """When the first waiting server has room again, and why they wait."""
        return min(self.waiting[s.pk] for s in self.servers)
