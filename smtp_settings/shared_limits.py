"""Keeping a server's limits for the whole cluster: every process on every host.

(Being written: SharedLimits, the Limits of a pool, comes here.)
"""

import time

from django.conf import settings

from smtp_settings.limit_stores import Figures, Window, store


def windows_of(server) -> list[Window]:
    """The server's quota windows, with the lengths in settings (an hour and a day)."""
    spans = {"hour": settings.SMTP_QUOTA_HOUR_S, "day": settings.SMTP_QUOTA_DAY_S}
    quotas = {"hour": server.quota_per_hour, "day": server.quota_per_day}
    return [Window(name, spans[name], quota) for name, quota in quotas.items() if quota]


def figures(server) -> Figures:
    """Live, cluster-wide figures for the server card."""
    return store().figures(server.pk, windows_of(server), time.time())
