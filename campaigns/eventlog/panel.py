"""The campaign page's Events panel (the counts per kind of its events and its sending chart),
kept in the cache between polls: at 200,000 events the counts take ~250 ms and the chart
~300 ms, and a running campaign's page asks for them every 10 s in every tab open on it.

Each poll first reads what the panel depends on, from indexes: the range of the campaign's
event ids (new rows, or old ones pruned) and its sent deliveries (how many, the latest). When
none of that nor the campaign's status changed, the panel kept is shown as it is. Otherwise the
events above the last id counted are added to the counts, and the chart kept is shown; both are
worked out afresh when the status changed, the oldest events were pruned, or the panel is older
than what working it out costs allows (`redraw_after`: COST_FACTOR times the time it took, at
least MIN_REDRAW_S, at most REFRESH_S; then also with nothing new, if the chart is behind). So a
small campaign's chart follows every poll, while a 200,000-event one is redrawn every ten
seconds or so and spends at most a twentieth of the time drawing; rows committed out of id
order (several sending processes on PostgreSQL) are in the counts by the next fresh count, or
after KEEP_S with nothing new.
"""

import time
from collections import Counter
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Max

from campaigns.eventlog.charts import campaign_chart
from campaigns.eventlog.filters import KindCount, ranked, summary
from campaigns.models import Campaign, Delivery
from project.charts import Chart

MIN_REDRAW_S = 2  # a panel is worked out afresh at most this often
COST_FACTOR = 20  # ... and no more often than this many times what that took
REFRESH_S = 60  # ... but at least this often while the campaign changes
KEEP_S = 600  # unchanged, a panel is still worked out afresh this often


@dataclass(frozen=True)
class Panel:
    state: tuple  # what it was worked out from: status, event ids, sent deliveries
    last_id: int  # the newest event counted
    counts: list[KindCount]
    chart: Chart | None
    at: float  # when counted and drawn afresh (time.time())
    afresh: bool  # at `state`: no events added since, no chart behind
    cost_s: float = 0.0  # what counting and drawing afresh took (0 in panels kept before it was)


def redraw_after(cost_s: float) -> float:
    """Seconds a panel that took `cost_s` to work out is kept before it is worked out afresh."""
    return min(max(MIN_REDRAW_S, COST_FACTOR * cost_s), REFRESH_S)


def panel_key(campaign: Campaign) -> str:
    return f"campaign-events:{campaign.pk}:{campaign.created_at.timestamp()}"


def _state(campaign: Campaign) -> tuple:
    events = campaign.events.order_by().values_list("id", flat=True)
    # Two index seeks; MIN and MAX in one query would read the whole range on SQLite.
    first, last = events.order_by("id").first(), events.order_by("-id").first()
    sent = Delivery.objects.filter(campaign=campaign, sent_at__isnull=False)
    sent = sent.aggregate(n=Count("sent_at"), last=Max("sent_at"))
    return campaign.status, first, last or 0, sent["n"], sent["last"]


def campaign_panel(campaign: Campaign) -> tuple[list[KindCount], Chart | None]:
    """The campaign's counts per kind and chart, as `summary()` and `campaign_chart()` give
    them, from the cache when nothing they show changed."""
    key = panel_key(campaign)
    state, kept, now = _state(campaign), cache.get(key), time.time()
    recent = kept is not None and now - kept.at < redraw_after(kept.cost_s)
    if kept is not None and kept.state == state and (kept.afresh or recent):
        return kept.counts, kept.chart
    status, first, last = state[:3]
    if recent and kept.state[:2] == (status, first):
        added = Counter(dict(kept.counts)) + Counter(dict(summary(campaign.events.filter(id__gt=kept.last_id))))
        panel = Panel(state, last, ranked(added.items()), kept.chart, kept.at, False, kept.cost_s)
    else:
        started = time.perf_counter()
        counts, chart = summary(campaign.events.all()), campaign_chart(campaign)
        panel = Panel(state, last, counts, chart, now, True, time.perf_counter() - started)
    cache.set(key, panel, KEEP_S)
    return panel.counts, panel.chart
