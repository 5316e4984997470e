"""The campaign page's Events panel (the counts per kind of its events and its sending chart),
kept in the cache between polls: at 200,000 events the counts take ~250 ms and the chart
~300 ms, and a running campaign's page asks for them every 10 s in every tab open on it.

Each poll first reads what the panel depends on, from indexes: the range of the campaign's
event ids (new rows, or old ones pruned) and its sent deliveries (how many, the latest). When
none of that nor the campaign's status changed, the panel kept is shown as it is. Otherwise the
events above the last id counted are added to the counts, and the chart kept is shown; both are
worked out afresh when the status changed, the oldest events were pruned, or REFRESH_S passed
since (then also with nothing new, if the chart is behind). So the chart of a running campaign
is at most REFRESH_S behind, and rows committed out of id order (several sending processes on
PostgreSQL) are in the counts by the next fresh count, or after KEEP_S with nothing new.
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

REFRESH_S = 60
KEEP_S = 600  # unchanged, a panel is still worked out afresh this often


@dataclass(frozen=True)
class Panel:
    state: tuple  # what it was worked out from: status, event ids, sent deliveries
    last_id: int  # the newest event counted
    counts: list[KindCount]
    chart: Chart | None
    at: float  # when counted and drawn afresh (time.time())
    afresh: bool  # at `state`: no events added since, no chart behind


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
    key = f"campaign-events:{campaign.pk}:{campaign.created_at.timestamp()}"
    state, kept, now = _state(campaign), cache.get(key), time.time()
    if kept is not None and kept.state == state and (kept.afresh or now - kept.at < REFRESH_S):
        return kept.counts, kept.chart
    status, first, last = state[:3]
    if kept is not None and kept.state[:2] == (status, first) and now - kept.at < REFRESH_S:
        added = Counter(dict(kept.counts)) + Counter(dict(summary(campaign.events.filter(id__gt=kept.last_id))))
        panel = Panel(state, last, ranked(added.items()), kept.chart, kept.at, False)
    else:
        panel = Panel(state, last, summary(campaign.events.all()), campaign_chart(campaign), now, True)
    cache.set(key, panel, KEEP_S)
    return panel.counts, panel.chart
