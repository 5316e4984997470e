"""The event log's writer: every pool event kept, storms folded into counts, old ones pruned."""

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from campaigns import eventlog
from campaigns.eventlog import writer
from campaigns.models import Campaign, Event
from campaigns.sending import loop
from smtp_settings.events import Kind, PoolEvent, smtp_event
from smtp_settings.sandbox import SES_421
from tests.campaigns.test_sending import make_campaign, start_sending


def emit(kind: str, **fields) -> None:
    fields = {"server_id": None, "server_name": "ses"} | fields
    smtp_event.send(sender=None, event=PoolEvent(kind=kind, **fields))


def total(**filters) -> int:
    return Event.objects.filter(**filters).aggregate(n=Sum("count"))["n"] or 0


@pytest.mark.django_db(transaction=True)
def test_a_campaign_run_leaves_every_pool_event_in_the_log(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(max_msgs_per_session=50, pipelining=True)
    server = make_server(port=sandbox.port, max_conns=3)
    campaign = make_campaign([server], 600)

    start_sending(campaign)  # flushes the log when it ends

    campaign.refresh_from_db()
    mine = {"campaign": campaign, "server": server}
    assert total(kind=Kind.CONNECT, **mine) == sandbox.summary()["sessions"]
    assert total(kind=Kind.SESSION_CLOSED_421, **mine) == sandbox.summary()["replied_421"] > 0
    assert set(Event.objects.filter(kind=Kind.SESSION_CLOSED_421).values_list("text", "stage")) == {
        (SES_421[4:], "MAIL")
    }
    assert total(kind=Kind.RECONNECT, **mine) == campaign.reconnects
    assert total(kind=Kind.ROTATION, **mine) == campaign.rotations > 0
    learned = Event.objects.get(kind=Kind.LEARNED_LIMIT)
    assert learned.detail["value"] == 45 and learned.campaign == campaign
    connect = Event.objects.filter(kind=Kind.CONNECT).first()
    assert connect.code == 220 and connect.duration_ms is not None and connect.connection_id


@pytest.mark.django_db
def test_a_storm_of_identical_events_is_one_row_with_a_count():
    for _ in range(1000):
        emit(Kind.SESSION_CLOSED_421, stage="MAIL", code=421, text="4.3.2 Too many connections")
    emit(Kind.SESSION_CLOSED_421, stage="MAIL", code=421, text="Connection closed by server.")
    emit(Kind.CONNECT, code=220, connection_id=1)
    emit(Kind.CONNECT, code=220, connection_id=2)

    assert eventlog.flush() == 4

    storm = Event.objects.get(text="4.3.2 Too many connections")
    assert storm.count == 1000 and storm.last_at >= storm.at and storm.enhanced_code == "4.3.2"
    assert Event.objects.filter(kind=Kind.CONNECT).count() == 2


@pytest.mark.django_db
def test_one_row_the_database_refuses_costs_that_row_only(caplog):
    emit(Kind.CONNECT, code=220, connection_id=1)
    emit(Kind.FAILURE, code=-45, text="a code no column takes")  # the positive-integer check refuses it
    emit(Kind.CONNECT, code=220, connection_id=2)
    emit(Kind.RETRY, code=451, text="NUL \x00 in a reply")  # PostgreSQL's text refuses NUL

    written = eventlog.flush()

    kept = set(Event.objects.values_list("kind", "connection_id"))
    assert {(Kind.CONNECT, 1), (Kind.CONNECT, 2)} <= kept and (Kind.FAILURE, None) not in kept
    assert written == len(kept) == Event.objects.count() >= 2
    assert "dropped a failure event" in caplog.text


@pytest.mark.django_db
def test_an_event_outlives_its_deleted_campaign_and_server(make_server):
    server = make_server()
    campaign = make_campaign([server], 1)
    emit(Kind.CONNECT, server_id=server.pk, context={"campaign_id": campaign.pk})
    campaign.delete()
    server.delete()

    eventlog.flush()

    event = Event.objects.get()
    assert (event.campaign, event.server, event.server_name) == (None, None, "ses")


@pytest.fixture
def threaded_buffer(settings):
    """A buffer that writes from its own thread, as in production; the thread ends with the test."""
    settings.EVENT_LOG_FLUSH_S = 0.05
    buffer = writer._Buffer()
    yield buffer
    buffer.stop()


def _event(kind: str = Kind.CONNECT) -> Event:
    now = timezone.now()
    return Event(at=now, last_at=now, kind=kind)


@pytest.mark.django_db(transaction=True)
def test_events_are_written_by_a_background_thread(threaded_buffer):
    threaded_buffer.add(_event())

    deadline = time.monotonic() + 5
    while not Event.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Event.objects.filter(kind=Kind.CONNECT).exists()


@pytest.mark.django_db(transaction=True)
def test_stopping_the_writer_ends_its_thread_at_once_and_writes_what_is_left(settings, threaded_buffer):
    settings.EVENT_LOG_FLUSH_S = 60  # the thread's first round is a minute away
    threaded_buffer.add(_event())
    thread = threaded_buffer._thread
    started = time.monotonic()

    threaded_buffer.stop()

    assert not thread.is_alive() and time.monotonic() - started < 5
    assert Event.objects.filter(kind=Kind.CONNECT).count() == 1


@pytest.mark.django_db(transaction=True)
def test_auto_pause_is_logged_with_its_reason(smtp_sandbox, make_server, settings):
    settings.CAMPAIGN_BATCH_SIZE = 5
    sandbox = smtp_sandbox(reject=".")
    campaign = make_campaign([make_server(port=sandbox.port)], 10, auto_pause_after=5)
    Campaign.objects.filter(pk=campaign.pk).update(status="running")

    loop.send_campaign(campaign.pk)

    event = Event.objects.get(kind=eventlog.AUTO_PAUSE)
    assert event.campaign == campaign and "5 failed deliveries in a row" in event.text and "550" in event.text


@pytest.mark.django_db
def test_prune_deletes_what_is_older_than_the_retention(monkeypatch):
    monkeypatch.setattr(writer, "PRUNE_CHUNK", 7)
    now = timezone.now()
    Event.objects.bulk_create(
        [Event(at=now - timedelta(days=d), last_at=now, kind=Kind.CONNECT) for d in [0, 1, 29] + [31] * 20]
    )
    out = StringIO()

    call_command("prune_events", stdout=out)

    assert out.getvalue().strip() == "deleted 20 events older than 30 days"
    assert Event.objects.count() == 3
    call_command("prune_events", "--days", "1", stdout=out)
    assert Event.objects.count() == 1


def test_schedules_register_once(db):
    from django_q.models import Schedule

    call_command("setup_schedules", stdout=StringIO())
    call_command("setup_schedules", stdout=StringIO())

    assert sorted(Schedule.objects.values_list("func", "minutes")) == [
        ("campaigns.tasks.prune_events", 1440),
        ("campaigns.tasks.watchdog", 1),
        ("smtp_settings.tasks.check_bounce_mailboxes", 5),
        ("smtp_settings.tasks.outbox_watchdog", 1),
    ]
