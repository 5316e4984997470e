"""What one process learns about a server's limits, every process uses: a per-connection cap
within its next batch, a concurrency ceiling at once; and only one process at a time probes
the ceiling upward again."""

import subprocess
import sys
import time

import pytest

from smtp_settings.events import Kind
from smtp_settings.learning import is_throttle
from smtp_settings.limit_stores import store
from smtp_settings.pool import ConnectionPool, ServerConfig
from smtp_settings.transaction import SessionClosed
from tests.conftest import ROOT, _worker_env
from tests.smtp_settings.test_backend import _backend, _messages

pytestmark = pytest.mark.django_db(transaction=True)  # another process reads what this one wrote

SEND_FROM_ANOTHER_PROCESS = """
from django.core.mail import EmailMessage, get_connection
backend = get_connection("smtp_settings.backends.RotatingEmailBackend", server={server_id}, retry_backoff_s=0.01)
messages = [
    EmailMessage("Hi", "From another process.\\n", "news@example.test", [f"other{{n}}@example.test"])
    for n in range({count})
]
assert backend.send_messages(messages) == {count}
"""


def _send_from_another_process(server, count: int) -> None:
    code = SEND_FROM_ANOTHER_PROCESS.format(server_id=server.pk, count=count)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=_worker_env(), check=True)


def test_a_cap_learned_in_another_process_is_kept_from_this_process_next_batch(smtp_sandbox, make_server):
    sandbox = smtp_sandbox(max_msgs_per_session=50)
    server = make_server(port=sandbox.port, max_msgs_per_conn=0, max_conns=2)
    assert _backend(server).send_messages(_messages(1)) == 1  # this process's pool exists, knowing nothing

    _send_from_another_process(server, 400)  # it meets the server's cap and learns it
    server.refresh_from_db()
    assert server.learned_msgs_per_conn == 45
    refused_so_far = sandbox.summary()["replied_421"]
    assert refused_so_far > 0

    messages = _messages(300)
    assert _backend(server).send_messages(messages) == 300
    assert sandbox.summary()["replied_421"] == refused_so_far  # rotated at 45, never reached 50
    assert {m.smtp_result.status for m in messages} == {"sent"}


def test_a_concurrency_ceiling_learned_by_one_pool_holds_for_another_at_once(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox(max_conns=2)
    server = make_server(port=sandbox.port, max_conns=6)
    first, second = ConnectionPool(ServerConfig.of(server)), ConnectionPool(ServerConfig.of(server))
    held = [first.checkout(), first.checkout()]
    with pytest.raises(SessionClosed):
        first.checkout()  # the server's third session: refused with 421 4.3.2

    assert first.limits.ceiling() == 2
    _wait_until(lambda: second.limits.ceiling() == 2, within_s=2.5)  # the other's heartbeat reads it
    assert sum(store().holders(server.pk, time.time()).values()) == 2
    assert second.limits.try_open() is None  # the two open are the cluster's two

    for conn in held:
        first.checkin(conn)
    first.close()
    second.close()


def test_only_one_pool_in_the_cluster_probes_upward_per_quiet_spell(smtp_sandbox, make_server, pool_events):
    sandbox = smtp_sandbox()
    server = make_server(port=sandbox.port, max_conns=6)
    pools = [ConnectionPool(ServerConfig.of(server), probe_interval_s=1.5) for _ in range(3)]
    pools[0].learner.refused(3, "421 4.3.2 The maximum number of concurrent connections has exceeded a limit")
    _wait_until(lambda: all(pool.limits.ceiling() == 3 for pool in pools), within_s=2.5)

    time.sleep(1.6)  # a quiet spell: no refusal since
    for pool in pools:  # each finishes a message: each would probe, were it alone
        pool.checkin(pool.checkout())

    raised = [event.detail["value"] for event in pool_events if event.kind == Kind.CONCURRENCY_RAISED]
    assert raised == [4]
    _wait_until(lambda: all(pool.limits.ceiling() == 4 for pool in pools), within_s=2.5)
    for pool in pools:
        pool.close()


def _wait_until(condition, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_a_deleted_server_leaves_nothing_behind_in_the_shared_limits(make_server):
    server = make_server()
    now = time.time()
    store().take_slot(server.pk, "elsewhere.example:1", 5, now + 30, now)
    store().set_ceiling(server.pk, 2)

    server.delete()

    assert store().holders(server.pk, time.time()) == {}
    assert store().state(server.pk).ceiling is None


@pytest.mark.parametrize(
    ("code", "text", "throttle"),
    [
        (454, "Throttling failure: Maximum sending rate exceeded.", True),  # Amazon SES
        (450, "4.7.1 Message rate limit exceeded, try again later", True),
        (451, "4.7.1 Sending too fast", True),
        (452, "4.2.2 Mailbox full, too many messages", False),  # the recipient's mailbox, not our pace
        (421, "4.3.2 The maximum number of concurrent connections has exceeded a limit", False),  # concurrency
        (451, "4.3.0 Temporary failure, please try again later", False),
        (554, "5.7.1 Throttling failure: rejected", False),  # permanent: a failure, not feedback
        (None, "throttled", False),  # no reply at all
    ],
)
def test_a_throttle_reply_is_one_that_says_we_send_too_fast(code, text, throttle):
    assert is_throttle(code, text) is throttle
