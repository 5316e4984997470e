"""How fast the connection timeline renders with thousands of connections, on SQLite.

    python bench/connections.py [--connections 5000] [--events 200000] [--var-dir DIR]

Makes a fresh SQLite database in a temporary directory (or reuses DIR if it already holds the
events), with one campaign of `--connections` SMTP connections over three hours, each a
connect, the sending's events on it (421s, retries, failures, reconnects: `--events` in all)
and its end (a rotation at 350 messages, most of them; a 421, an idle or age close, a network
error, a shutdown), and as many events of other campaigns around it, as in a busy log. Then
times, with the Django test client as a logged-in superuser, the timeline's first page for
the campaign, a page in the middle, its last page, and a time range of the last hour: best of
5, in milliseconds (`bench/log_page.py`'s setup and timer). The budget is 200 ms each.
"""

import argparse
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from log_page import BATCH, best_ms, run

SES_421 = "421 Connection closed by server. Maximum message count per session reached."
# How a connection ends: (weight, kind, messages it carried, stage, text, detail)
ENDS = [
    (80, "rotation", 350, "", "", {"cap": 350}),
    (8, "421", 350, "MAIL", SES_421, {}),
    (5, "idle_close", 120, "", "", {"idle_timeout": 30}),
    (3, "age_close", 200, "", "", {"max_conn_age": 600}),
    (2, "network_error", 80, "DATA", "Connection reset by peer", {}),
    (2, "close", 40, "", "", {"reason": "shutdown"}),
]
ON_THE_WAY = [("retry", 451, "451 4.4.2 Timeout waiting for data"), ("failure", 550, "550 5.1.1 User unknown")]


def populate(connections: int, events: int) -> None:
    from django.core.management import call_command

    from campaigns.models import Campaign, Event
    from smtp_settings.events import connection_ids
    from smtp_settings.models import SmtpServer

    call_command("migrate", verbosity=0)
    rng = random.Random(7)
    server = SmtpServer.objects.create(name="SES", host="127.0.0.1", port=2525, tls="none", auth_protocol="none")
    ours, other = (Campaign.objects.create(name=name, subject="s", from_email="a@example.test") for name in "AB")
    end_of_run = datetime.now(UTC) - timedelta(minutes=5)
    start = end_of_run - timedelta(hours=3)
    per_connection = max(events // connections - 2, 0)
    rows = []

    def row(campaign, number, at, kind, messages=0, stage="", code=None, text="", detail=None):
        return Event(
            at=at,
            last_at=at,
            kind=kind,
            server=server,
            server_name=server.name,
            campaign=campaign,
            connection_id=number,
            messages_on_connection=messages,
            stage=stage,
            code=code,
            text=text,
            detail=detail or {},
        )

    for n in range(connections * 2):  # ours, and as many of another campaign in between
        campaign = ours if n % 2 == 0 else other
        opened = start + timedelta(seconds=3 * 3600 * n / (connections * 2))
        number = connection_ids.next()
        _, kind, messages, stage, text, detail = rng.choices(ENDS, weights=[end[0] for end in ENDS])[0]
        lasted = timedelta(seconds=rng.uniform(2, 40))
        rows.append(row(campaign, number, opened, "connect", text="250 Hello"))
        for k in range(per_connection):
            name, code, said = ON_THE_WAY[k % 2]
            at = opened + lasted * (k + 1) / (per_connection + 1)
            rows.append(row(campaign, number, at, name, k, "RCPT", code, said))
        code = 421 if kind == "421" else None
        rows.append(row(campaign, number, opened + lasted, kind, messages, stage, code, text, detail))
        if len(rows) >= BATCH:
            Event.objects.bulk_create(rows)
            rows = []
    Event.objects.bulk_create(rows)


def measure() -> list[tuple[str, str, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from campaigns.eventlog.connections import PAGE_LANES
    from campaigns.models import Campaign, Event

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    client = Client()
    client.force_login(user)
    timeline = reverse("logs:connections")
    campaign = Campaign.objects.get(name="A")
    connects = Event.objects.filter(campaign=campaign, kind="connect").order_by("id").values_list("id", flat=True)
    total = connects.count()
    middle, last = connects[total // 2], connects[max(total - PAGE_LANES - 1, 0)]
    newest = Event.objects.order_by("-id").values_list("at", flat=True)[0]
    hour = (newest - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    cases = [
        ("campaign, first page", f"{timeline}?campaign={campaign.pk}"),
        ("campaign, a page in the middle", f"{timeline}?campaign={campaign.pk}&after={middle}"),
        ("campaign, last page", f"{timeline}?campaign={campaign.pk}&after={last}"),
        ("time range: the last hour, every campaign", f"{timeline}?since={hour}"),
        ("campaign's Events panel (chart)", reverse("logs:campaign", args=[campaign.pk])),
    ]
    return [(name, url, best_ms(client, url)) for name, url in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--events", type=int, default=200_000, help="of the campaign measured; as many besides")
    parser.add_argument("--var-dir", type=Path, help="reuse this directory's database if it has the events")
    args = parser.parse_args()
    run(args.var_dir, "relaydeck-bench-connections-", lambda: populate(args.connections, args.events), measure)


if __name__ == "__main__":
    main()
