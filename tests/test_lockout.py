"""Login throttling (django-axes): an account, and an address, that failed too often wait."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse

pytestmark = pytest.mark.django_db
PASSWORD = "right-horse-battery"


@pytest.fixture(autouse=True)
def accounts(django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    for name in ("alice", "bob"):
        django_user_model.objects.create_user(name, password=PASSWORD)


def _login(client, username: str, password: str, address: str):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def _fail(client, username: str, address: str, times: int = 5):
    return [_login(client, username, "wrong", address).status_code for _ in range(times)]


def test_five_bad_passwords_lock_the_account_and_say_when_to_try_again(client):
    assert _fail(client, "alice", "10.0.0.1") == [200, 200, 200, 200, 429]
    response = _login(client, "alice", PASSWORD, "10.0.0.1")
    content = response.content.decode()
    assert response.status_code == 429
    assert "Too many failed logins" in content and "Try again after" in content
    assert "(in 15\xa0minutes)" in content
    assert "_auth_user_id" not in client.session


def test_a_locked_account_stays_locked_from_another_address(client):
    _fail(client, "alice", "10.0.0.1")
    assert _login(client, "alice", PASSWORD, "10.0.0.2").status_code == 429


def test_a_locked_address_cannot_try_another_account(client):
    _fail(client, "alice", "10.0.0.1")
    assert _login(client, "bob", PASSWORD, "10.0.0.1").status_code == 429


def test_another_account_from_another_address_still_logs_in(client):
    _fail(client, "alice", "10.0.0.1")
    response = _login(client, "bob", PASSWORD, "10.0.0.2")
    assert response.status_code == 302 and client.session["_auth_user_id"]


def test_failures_spread_over_addresses_still_lock_the_account(client):
    for n in range(5):
        _login(client, "alice", "wrong", f"10.0.1.{n}")
    assert _login(client, "alice", PASSWORD, "10.0.2.1").status_code == 429


def test_the_lock_ends_after_the_cool_off(client):
    _fail(client, "alice", "10.0.0.1")
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    response = _login(client, "alice", PASSWORD, "10.0.0.1")
    assert response.status_code == 302 and client.session["_auth_user_id"]


def test_fewer_failures_than_the_limit_lock_nothing(client):
    _fail(client, "alice", "10.0.0.1", times=4)
    assert _login(client, "alice", PASSWORD, "10.0.0.1").status_code == 302


def test_behind_a_tls_proxy_the_address_is_the_one_the_proxy_forwarded(client, settings):
    settings.BEHIND_TLS_PROXY = True
    for n in range(5):  # the client claims a new address each time; the proxy appends the real one
        client.post(
            reverse("login"),
            {"username": f"nobody{n}", "password": "wrong"},
            REMOTE_ADDR="10.9.9.9",
            HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 192.0.2.7",
        )

    assert _login(client, "bob", PASSWORD, "10.9.9.9").status_code == 302  # the proxy's own address is not locked
    locked = client.post(
        reverse("login"),
        {"username": "bob", "password": PASSWORD},
        REMOTE_ADDR="10.9.9.9",
        HTTP_X_FORWARDED_FOR="192.0.2.7",
    )
    assert locked.status_code == 429
