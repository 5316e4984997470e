"""Keeping a server's limits for the whole cluster: every process on every host.

(Being written: SharedLimits, the Limits of a pool, comes here.)
"""

import time

from django.conf import settings

from smtp_settings.limit_stores import Figures, State, Window, store


def windows_of(server) -> list[Window]:
    """The server's quota windows, with the lengths in settings (an hour and a day)."""
    spans = {"hour": settings.SMTP_QUOTA_HOUR_S, "day": settings.SMTP_QUOTA_DAY_S}
    quotas = {"hour": server.quota_per_hour, "day": server.quota_per_day}
    return [Window(name, spans[name], quota) for name, quota in quotas.items() if quota]


def figures(server) -> Figures:
    """Live, cluster-wide figures for the server card."""
    return store().figures(server.pk, windows_of(server), time.time())


def effective_ceiling(server, state: State) -> int:
    """The most connections open to the server at once: the configured number, or less if
    the server refused more (learned and stored, or lowered cluster-wide by refusals)."""
    return min(n for n in (server.max_conns, server.learned_max_conns, state.ceiling) if n)


def rate_per_minute(server) -> float | None:
    """The configured rates as units a minute, the stricter if both are set; None: unlimited."""
    rates = [rate for rate in (server.rate_limit * 60, server.rate_per_minute) if rate]
    return min(rates) if rates else None
