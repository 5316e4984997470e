"""What a server card shows live: the cluster-wide figures against the server's limits."""

from dataclasses import dataclass

from smtp_settings.shared_limits import effective_ceiling, figures, rate_per_minute, windows_of


@dataclass(frozen=True)
class QuotaUse:
    window: str  # "hour" or "day"
    used: int
    quota: int


@dataclass(frozen=True)
class Live:
    open: int  # connections open to the server, from every process
    ceiling: int
    sent_last_minute: int
    per_minute: float | None  # the configured rates as units a minute; None: unlimited
    throttled_per_minute: float | None  # lowered after the server's throttle replies
    quotas: list[QuotaUse]  # only the quotas that are set
    owners: int  # processes using the server's connections


def live_figures(server) -> Live:
    now = figures(server)
    throttled = now.state.throttled_rate
    return Live(
        open=now.open,
        ceiling=effective_ceiling(server, now.state),
        sent_last_minute=now.sent_last_minute,
        per_minute=rate_per_minute(server),
        throttled_per_minute=None if throttled is None else throttled * 60,
        quotas=[QuotaUse(window.name, now.used.get(window.name, 0), window.quota) for window in windows_of(server)],
        owners=now.owners,
    )
