"""The LimitStore protocol, as a specification every store meets alike: the database store
always, the Redis store when REDIS_URL is set (CI runs the suite once with it).

Times are the caller's, so the tests pass explicit `now` values instead of sleeping. The quota
windows have binary-exact buckets (0.25 s and 1 s) so that bucket edges are exact too."""

import threading
import time
from uuid import uuid4

import pytest
from django.conf import settings
from django.db import connection

from smtp_settings.limit_stores import DatabaseStore, Exhausted, Figures, State, Window

HOUR = Window("hour", 6.0, 5)  # 24 buckets of 0.25 s
DAY = Window("day", 24.0, 8)  # 24 buckets of 1 s
LEASE = 30.0


@pytest.fixture(
    params=[
        pytest.param("database", marks=pytest.mark.django_db(transaction=True)),  # threads have their own connections
        "redis",
    ]
)
def limit_store(request):
    if request.param == "database":
        yield DatabaseStore()
        return
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    from smtp_settings.redis_store import RedisStore

    prefix = f"test:{uuid4()}:"
    redis_store = RedisStore(settings.REDIS_URL, prefix=prefix)
    yield redis_store
    keys = list(redis_store.client.scan_iter(match=prefix + "*"))
    if keys:
        redis_store.client.delete(*keys)
    redis_store.client.close()


def _in_threads(count: int, work) -> None:
    """Run work(i) in `count` threads at once; each closes its own database connection."""

    def run(i):
        try:
            work(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- slots --


def test_takes_slots_up_to_the_ceiling_and_no_more(limit_store):
    taken = [limit_store.take_slot(1, f"h:{n}", 3, 100 + LEASE, 100.0) for n in range(4)]
    assert taken == [0, 1, 2, None]
    assert limit_store.take_slot(2, "h:9", 3, 100 + LEASE, 100.0) == 0  # another server's slots are its own


def test_takes_the_smallest_free_number(limit_store):
    for _ in range(3):
        limit_store.take_slot(1, "h:1", 3, 100 + LEASE, 100.0)
    limit_store.give_slot(1, "h:1", 1)
    assert limit_store.take_slot(1, "h:2", 3, 100 + LEASE, 100.0) == 1


def test_a_lowered_ceiling_refuses_while_more_are_held(limit_store):
    for _ in range(3):
        limit_store.take_slot(1, "h:1", 3, 100 + LEASE, 100.0)
    assert limit_store.take_slot(1, "h:2", 2, 100 + LEASE, 100.0) is None
    limit_store.give_slot(1, "h:1", 0)
    limit_store.give_slot(1, "h:1", 2)
    assert limit_store.take_slot(1, "h:2", 2, 100 + LEASE, 100.0) == 0


def test_an_expired_slot_is_free_again(limit_store):
    assert limit_store.take_slot(1, "h:1", 1, 130.0, 100.0) == 0
    assert limit_store.take_slot(1, "h:2", 1, 160.0, 130.0) is None  # live until its last moment
    assert limit_store.take_slot(1, "h:2", 1, 160.0, 130.5) == 0
    assert limit_store.holders(1, 130.5) == {"h:2": 1}


def test_a_slot_is_given_back_only_by_its_owner(limit_store):
    limit_store.take_slot(1, "h:1", 1, 130.0, 100.0)
    limit_store.give_slot(1, "h:2", 0)
    assert limit_store.holders(1, 100.0) == {"h:1": 1}
    limit_store.give_slot(1, "h:1", 0)
    assert limit_store.holders(1, 100.0) == {}


def test_renew_extends_only_the_slots_still_held(limit_store):
    mine = [
        (1, limit_store.take_slot(1, "h:1", 2, 130.0, 100.0)),
        (2, limit_store.take_slot(2, "h:1", 1, 130.0, 100.0)),
    ]
    assert limit_store.take_slot(2, "h:2", 1, 170.0, 140.0) == 0  # h:1's slot on server 2 ran out and went
    assert limit_store.renew("h:1", [*mine, (1, 1)], 190.0) == [(1, 0)]
    assert limit_store.holders(1, 180.0) == {"h:1": 1}
    assert limit_store.holders(2, 150.0) == {"h:2": 1}
    assert limit_store.renew("h:1", [], 190.0) == []


def test_holders_are_the_live_slots_per_owner(limit_store):
    limit_store.take_slot(1, "h:1", 5, 130.0, 100.0)
    limit_store.take_slot(1, "h:1", 5, 160.0, 100.0)
    limit_store.take_slot(1, "h:2", 5, 160.0, 100.0)
    assert limit_store.holders(1, 100.0) == {"h:1": 2, "h:2": 1}
    assert limit_store.holders(1, 140.0) == {"h:1": 1, "h:2": 1}
    assert limit_store.holders(2, 100.0) == {}


def test_drop_owner_frees_its_slots_and_demand_on_every_server(limit_store):
    for server_id in (1, 2):
        limit_store.take_slot(server_id, "h:1", 5, 130.0, 100.0)
        limit_store.take_slot(server_id, "h:2", 5, 130.0, 100.0)
        limit_store.note_demand(server_id, "h:1", True, 130.0)
        limit_store.note_demand(server_id, "h:2", False, 130.0)
    limit_store.drop_owner("h:1")
    for server_id in (1, 2):
        assert limit_store.holders(server_id, 100.0) == {"h:2": 1}
        assert limit_store.demand(server_id, 100.0) == {"h:2": False}
    assert limit_store.take_slot(1, "h:3", 2, 130.0, 100.0) == 0
    limit_store.drop_owner("h:1")  # nothing left: nothing happens


# -- demand --


def test_demand_is_the_live_owners_and_whether_they_wait(limit_store):
    limit_store.note_demand(1, "h:1", False, 130.0)
    limit_store.note_demand(1, "h:2", True, 110.0)
    limit_store.note_demand(2, "h:3", True, 130.0)
    assert limit_store.demand(1, 100.0) == {"h:1": False, "h:2": True}
    assert limit_store.demand(1, 120.0) == {"h:1": False}
    limit_store.note_demand(1, "h:2", False, 150.0)  # noted again: it replaces
    limit_store.note_demand(1, "h:1", True, 150.0)
    assert limit_store.demand(1, 140.0) == {"h:1": True, "h:2": False}


# -- pacing --


def test_consecutive_turns_are_an_interval_apart(limit_store):
    assert [limit_store.reserve(1, 0.25, 100.0) for _ in range(3)] == [100.0, 100.25, 100.5]
    assert limit_store.reserve(1, 0.25, 100.1) == 100.75  # behind schedule: after the last turn
    assert limit_store.reserve(2, 0.25, 100.0) == 100.0  # another server paces alone


def test_a_turn_after_a_gap_starts_now(limit_store):
    limit_store.reserve(1, 0.5, 100.0)
    assert limit_store.reserve(1, 0.5, 200.0) == 200.0
    assert limit_store.reserve(1, 1.0, 200.0) == 200.5  # the interval of the previous turn holds


def test_a_turn_keeps_the_callers_precision(limit_store):
    now = 1764086400.123456
    first = limit_store.reserve(1, 0.1, now)
    assert first == pytest.approx(now, abs=1e-6)
    assert limit_store.reserve(1, 0.1, now) == pytest.approx(now + 0.1, abs=1e-6)


# -- quotas --


def test_counts_units_exactly_in_every_window(limit_store):
    assert limit_store.take_quota(1, 3, [HOUR, DAY], 1000.0) is None
    assert limit_store.take_quota(1, 2, [HOUR, DAY], 1000.5) is None
    assert limit_store.figures(1, [HOUR, DAY], 1000.5).used == {"hour": 5, "day": 5}
    assert limit_store.take_quota(1, 1, [HOUR, DAY], 1000.5) == Exhausted("hour", 5, 5, 1006.25)


def test_a_refusal_counts_nothing(limit_store):
    assert limit_store.take_quota(1, 5, [HOUR, DAY], 1000.0) is None
    assert limit_store.take_quota(1, 3, [HOUR, DAY], 1010.0) is None  # the hour has forgotten the 5
    full = limit_store.take_quota(1, 1, [HOUR, DAY], 1010.0)
    assert full == Exhausted("day", 8, 8, 1025.0)
    assert limit_store.figures(1, [HOUR, DAY], 1010.0).used == {"hour": 3, "day": 8}


def test_free_at_is_when_enough_has_left_the_window(limit_store):
    limit_store.take_quota(1, 2, [HOUR], 1000.0)  # bucket 4000: counts until 1006.25
    limit_store.take_quota(1, 3, [HOUR], 1000.5)  # bucket 4002: counts until 1006.75
    assert limit_store.take_quota(1, 2, [HOUR], 1001.0) == Exhausted("hour", 5, 5, 1006.25)
    assert limit_store.take_quota(1, 3, [HOUR], 1001.0) == Exhausted("hour", 5, 5, 1006.75)
    assert limit_store.take_quota(1, 3, [HOUR], 1006.5) == Exhausted("hour", 3, 5, 1006.75)
    assert limit_store.take_quota(1, 3, [HOUR], 1006.75) is None


def test_a_window_counts_its_buckets_whole(limit_store):
    limit_store.take_quota(1, 5, [HOUR], 1000.2)  # bucket 4000 begins at 1000.0
    assert limit_store.take_quota(1, 1, [HOUR], 1006.2) == Exhausted("hour", 5, 5, 1006.25)
    assert limit_store.take_quota(1, 1, [HOUR], 1006.25) is None


def test_more_units_than_the_quota_never_fit(limit_store):
    assert limit_store.take_quota(1, 6, [HOUR, DAY], 1000.0) == Exhausted("hour", 0, 5, None)
    assert limit_store.figures(1, [HOUR, DAY], 1000.0).used == {"hour": 0, "day": 0}


def test_servers_have_their_own_quotas(limit_store):
    limit_store.take_quota(1, 5, [HOUR], 1000.0)
    assert limit_store.take_quota(2, 5, [HOUR], 1000.0) is None


# -- the card --


def test_figures_are_what_the_card_shows(limit_store):
    limit_store.take_slot(1, "h:1", 5, 1030.0, 1000.0)
    limit_store.take_slot(1, "h:1", 5, 1030.0, 1000.0)
    limit_store.take_slot(1, "h:2", 5, 1010.0, 1000.0)
    limit_store.note_demand(1, "h:3", True, 1030.0)
    limit_store.note_demand(1, "h:1", False, 1030.0)
    limit_store.take_quota(1, 4, [HOUR, DAY], 1000.0)
    limit_store.count_sent(1, 2, 961.0)  # bucket 192: out of the minute
    limit_store.count_sent(1, 3, 965.0)  # bucket 193: the oldest in it
    limit_store.count_sent(1, 4, 1019.0)
    limit_store.set_ceiling(1, 3)
    assert limit_store.figures(1, [HOUR, DAY], 1020.0) == Figures(
        open=2, sent_last_minute=7, used={"hour": 0, "day": 4}, state=State(ceiling=3), owners=2
    )
    assert limit_store.figures(2, [HOUR, DAY], 1020.0) == Figures(used={"hour": 0, "day": 0})


def test_the_last_minute_forgets_what_was_sent_before(limit_store):
    limit_store.count_sent(1, 2, 1000.0)
    limit_store.count_sent(1, 3, 1060.0)
    assert limit_store.figures(1, [], 1060.0).sent_last_minute == 3
    limit_store.count_sent(1, 1, 1061.0)
    assert limit_store.figures(1, [], 1064.0).sent_last_minute == 4


# -- feedback --


def test_a_ceiling_is_lowered_and_restored(limit_store):
    assert limit_store.state(1) == State()
    limit_store.set_ceiling(1, 2)
    assert limit_store.state(1).ceiling == 2
    limit_store.set_ceiling(1, None)
    assert limit_store.state(1) == State()


def test_one_probe_per_quiet_spell(limit_store):
    assert limit_store.claim_probe(1, 30.0, 100.0)
    assert not limit_store.claim_probe(1, 30.0, 100.0)
    assert not limit_store.claim_probe(1, 30.0, 129.0)
    assert limit_store.claim_probe(1, 30.0, 130.0)
    limit_store.note_refusal(1, 140.0)  # a refusal starts the quiet spell again
    assert limit_store.state(1).probe_at == 140.0
    assert not limit_store.claim_probe(1, 30.0, 160.0)
    assert limit_store.claim_probe(1, 30.0, 170.0)


def test_throttle_is_set_only_if_unchanged_since(limit_store):
    assert limit_store.set_throttle(1, 2.5, 0.0, 100.0)
    assert not limit_store.set_throttle(1, 5.0, 99.0, 101.0)  # someone changed it at 100
    assert limit_store.state(1) == State(throttled_rate=2.5, throttled_at=100.0)
    assert limit_store.set_throttle(1, None, 100.0, 130.0)
    assert limit_store.state(1) == State(throttled_rate=None, throttled_at=130.0)


def test_forget_drops_everything_of_a_server(limit_store):
    for server_id in (1, 2):
        limit_store.take_slot(server_id, "h:1", 5, 1030.0, 1000.0)
        limit_store.note_demand(server_id, "h:1", True, 1030.0)
        limit_store.reserve(server_id, 1.0, 1000.0)
        limit_store.take_quota(server_id, 4, [HOUR, DAY], 1000.0)
        limit_store.count_sent(server_id, 3, 1000.0)
        limit_store.set_ceiling(server_id, 2)
        limit_store.set_throttle(server_id, 1.0, 0.0, 1000.0)
    kept = limit_store.figures(2, [HOUR, DAY], 1000.0)
    limit_store.forget(1)
    assert limit_store.figures(1, [HOUR, DAY], 1000.0) == Figures(used={"hour": 0, "day": 0})
    assert limit_store.demand(1, 1000.0) == {}
    assert limit_store.reserve(1, 1.0, 1000.0) == 1000.0
    assert limit_store.figures(2, [HOUR, DAY], 1000.0) == kept


# -- at once --


def test_many_threads_never_hold_more_slots_than_the_ceiling(limit_store):
    lock = threading.Lock()
    held, most, taken = 0, 0, 0

    def work(i):
        nonlocal held, most, taken
        for _ in range(50):
            number = limit_store.take_slot(1, f"h:{i}", 5, 1030.0, 1000.0)
            if number is None:
                continue
            with lock:
                held, most, taken = held + 1, max(most, held + 1), taken + 1
            time.sleep(0.002)  # hold it a while, so the others find the slots taken
            with lock:
                held -= 1
            limit_store.give_slot(1, f"h:{i}", number)

    _in_threads(8, work)
    assert 0 < most <= 5
    assert taken > 0 and held == 0
    assert limit_store.holders(1, 1000.0) == {}


def test_many_threads_take_exactly_the_quota(limit_store):
    window = Window("day", 86400.0, 60)
    lock = threading.Lock()
    successes = 0

    def work(i):
        nonlocal successes
        while limit_store.take_quota(1, 1, [window], 1000.0) is None:
            with lock:
                successes += 1

    _in_threads(8, work)
    assert successes == 60
    assert limit_store.figures(1, [window], 1000.0).used == {"day": 60}


# -- Redis: what it keeps --


@pytest.mark.parametrize("limit_store", ["redis"], indirect=True)
def test_redis_windows_expire_and_forget_deletes_the_server_keys(limit_store):
    limit_store.take_slot(1, "h:1", 5, 1030.0, 1000.0)
    limit_store.note_demand(1, "h:1", True, 1030.0)
    limit_store.reserve(1, 1.0, 1000.0)
    limit_store.take_quota(1, 1, [HOUR, DAY], 1000.0)
    limit_store.count_sent(1, 1, 1000.0)
    client, prefix = limit_store.client, limit_store.prefix
    assert 6250 <= client.pttl(f"{prefix}1:win:hour") <= 7250  # a span and a bucket, and a second
    assert 0 < client.pttl(f"{prefix}1:win:day") <= 26000
    assert 0 < client.pttl(f"{prefix}1:win:sent") <= 66000
    limit_store.take_slot(10, "h:1", 5, 1030.0, 1000.0)  # its keys begin like server 1's
    limit_store.forget(1)
    assert sorted(client.scan_iter(match=prefix + "*")) == [
        f"{prefix}10:owners",
        f"{prefix}10:slots",
        f"{prefix}owner:h:1",
    ]
