"""The relay's logins (`smtp_settings/relay/credentials.py` and the AUTH side of `server.py`):
the password hasher paid once per password, not per login; a bounded queue for it; what
becomes of a session whose login is deleted, disabled or given a new password; and sessions
that do not log in, or keep failing to."""

import base64
import smtplib
import ssl
import threading
import time

import pytest
from django.contrib.auth.hashers import check_password, make_password

from smtp_settings.models import OutboxMessage, RelayCredential
from tests.smtp_settings.test_relay import (
    LOOPBACK,
    PASSWORD,
    RawSession,
    auth,
    connect,
    make_credential,
    queued_id,
    refuses_to_relay,
    send,
)

pytestmark = pytest.mark.django_db(transaction=True)

PBKDF2 = "django.contrib.auth.hashers.PBKDF2PasswordHasher"


@pytest.fixture
def real_hasher(settings):
    """Django's PBKDF2 at its full cost (about half a second a check), not the tests' MD5."""
    settings.PASSWORD_HASHERS = [PBKDF2]


def in_threads(count: int, action) -> list:
    """`action(n)` for n in range(count), all at once (after a barrier), each in its own thread."""
    together = threading.Barrier(count)
    results = [None] * count

    def run(n: int) -> None:
        results[n] = action(n, together)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def login_code(relay, username: str, password: str, together: threading.Barrier | None = None) -> int:
    """The reply to one AUTH PLAIN on a new connection."""
    with connect(relay) as smtp:
        smtp.ehlo()
        if together:
            together.wait(timeout=30)
        try:
            return auth(smtp, username, password)[0]
        except smtplib.SMTPAuthenticationError as refused:
            return refused.smtp_code


# -- the password hasher: once per password --


def test_a_repeat_login_does_not_pay_the_password_hasher_again(smtp_relay, real_hasher):
    make_credential("app")
    started = time.perf_counter()
    assert check_password(PASSWORD, RelayCredential.objects.get().password_hash)
    one_check_s = time.perf_counter() - started
    relay = smtp_relay()
    assert login_code(relay, "app", PASSWORD) == 235  # checked by the hasher, and remembered

    started = time.perf_counter()
    codes = [login_code(relay, "app", PASSWORD) for _ in range(20)]  # a connection and a login per message

    assert codes == [235] * 20
    assert time.perf_counter() - started < 5 * one_check_s  # the hasher alone would take 20


def test_a_new_password_is_checked_afresh_and_the_old_one_no_longer_opens(smtp_relay):
    credential = make_credential("app")
    relay = smtp_relay()
    assert login_code(relay, "app", PASSWORD) == 235
    credential.set_password("a brand new password")
    credential.save()

    assert login_code(relay, "app", PASSWORD) == 535
    assert login_code(relay, "app", "a brand new password") == 235


def test_a_deleted_and_recreated_login_does_not_take_the_old_password(smtp_relay):
    make_credential("app")
    relay = smtp_relay()
    assert login_code(relay, "app", PASSWORD) == 235
    RelayCredential.objects.all().delete()
    renewed = RelayCredential(name="app", username="app")
    renewed.set_password("another password")
    renewed.save()

    assert login_code(relay, "app", PASSWORD) == 535


def test_a_password_hashed_by_an_older_hasher_is_rehashed_at_login(smtp_relay, settings):
    settings.PASSWORD_HASHERS = [PBKDF2, "django.contrib.auth.hashers.MD5PasswordHasher"]
    RelayCredential.objects.create(name="app", username="app", password_hash=make_password(PASSWORD, hasher="md5"))
    relay = smtp_relay()
    with connect(relay) as smtp:
        assert auth(smtp, "app", PASSWORD)[0] == 235
        queued_id(send(smtp))  # the session goes on with the new hash

    stored = RelayCredential.objects.get().password_hash
    assert stored.startswith("pbkdf2_sha256$") and check_password(PASSWORD, stored)


def test_logins_beyond_what_the_hasher_can_take_are_told_to_try_again_later(smtp_relay, real_hasher):
    relay = smtp_relay(max_pending_logins=2)

    codes = in_threads(6, lambda n, together: login_code(relay, f"nobody{n}", PASSWORD, together))

    assert sorted(codes) == [454] * 4 + [535] * 2  # two hashed (unknown users cost as much), four turned away


def test_many_first_logins_of_one_credential_at_once_share_one_check(smtp_relay, real_hasher):
    make_credential("app")
    relay = smtp_relay(max_pending_logins=2)  # a relay restarted under a chat server's @all

    codes = in_threads(10, lambda n, together: login_code(relay, "app", PASSWORD, together))

    assert codes == [235] * 10


# -- a login changed while its session goes on --


def _delete(credential):
    credential.delete()


def _disable(credential):
    credential.enabled = False
    credential.save()


def _new_password(credential):
    credential.set_password("a brand new password")
    credential.save()


@pytest.mark.parametrize(
    ("change", "code"), [(_delete, 530), (_disable, 530), (_new_password, 451)], ids=["deleted", "disabled", "password"]
)
def test_a_session_whose_login_was_deleted_disabled_or_given_a_new_password_sends_no_more(smtp_relay, change, code):
    credential = make_credential("app")
    relay = smtp_relay()
    with connect(relay) as smtp:
        auth(smtp, "app", PASSWORD)
        first = queued_id(send(smtp))
        change(credential)
        assert send(smtp)[0] == code

    assert list(OutboxMessage.objects.values_list("pk", flat=True)) == [first]


# -- sessions that do not log in --


def test_rset_and_a_second_transaction_are_still_unauthenticated(smtp_relay):
    make_credential("app")
    relay = smtp_relay()
    with connect(relay) as smtp:
        assert refuses_to_relay(smtp)
        assert refuses_to_relay(smtp)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            auth(smtp, "app", "a wrong password")
        assert refuses_to_relay(smtp)
    assert not OutboxMessage.objects.exists()


def test_starttls_is_no_login_and_forgets_one_made_before_it(smtp_relay, certificates):
    make_credential("app")
    relay = smtp_relay(tls_context=certificates.server_context())
    tls = ssl.create_default_context(cafile=certificates.ca_file)
    with connect(relay) as smtp:
        smtp.starttls(context=tls)
        smtp.ehlo()
        assert refuses_to_relay(smtp)
    with connect(relay) as smtp:
        assert auth(smtp, "app", PASSWORD)[0] == 235  # from loopback, before STARTTLS
        smtp.starttls(context=tls)
        smtp.ehlo()
        assert refuses_to_relay(smtp)  # RFC 3207: the session starts over
    assert not OutboxMessage.objects.exists()


def test_the_third_failed_login_ends_the_session(smtp_relay):
    make_credential("app")
    relay = smtp_relay()
    session = RawSession(relay.port)
    try:
        codes = [
            session.command(b"AUTH PLAIN " + base64.b64encode(b"\0app\0wrong " + str(n).encode())) for n in range(3)
        ]
        assert codes == [535, 535, 421]
        assert session.replies.readline() == b""  # closed
    finally:
        session.close()


def cut_off(smtp: smtplib.SMTP, within_s: float) -> bool:
    """Whether the relay ends this session within `within_s`, while it sends a NOOP every 0.2 s
    (busy, not silent: RELAY_TIMEOUT_S is not what ends it)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if smtp.noop()[0] == 421:
                return True
        except OSError:  # closed, or reset
            return True
        time.sleep(0.2)
    return False


def test_a_client_that_does_not_log_in_in_time_is_cut_off(smtp_relay, settings):
    settings.RELAY_LOGIN_TIMEOUT_S = 1
    make_credential("app")
    relay, trusting = smtp_relay(), smtp_relay(trusted_networks=LOOPBACK)
    with connect(relay) as idle, connect(relay) as logged_in, connect(trusting) as trusted:
        assert auth(logged_in, "app", PASSWORD)[0] == 235
        trusted.ehlo()

        assert cut_off(idle, within_s=3)
        assert not cut_off(logged_in, within_s=0.5) and not cut_off(trusted, within_s=0.5)
        queued_id(send(logged_in))
        queued_id(send(trusted))


def test_a_command_sent_too_often_ends_the_session(smtp_relay):
    relay = smtp_relay(trusted_networks=LOOPBACK)
    session = RawSession(relay.port)
    try:
        assert [session.command(b"HELP") for _ in range(11)] == [250] * 10 + [421]
        assert session.replies.readline() == b""  # closed
    finally:
        session.close()
