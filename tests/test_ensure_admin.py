"""`manage.py ensure_admin` (run by every `make run`): the account the environment names gets
that password, a fresh database gets an admin with a one-time password, and each run says, in
one line, what it did."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from project.models import PasswordChangeRequired
from project.roles import Role, role_of

pytestmark = pytest.mark.django_db


def authenticate(username: str, password: str):
    """The account, if the password is its own (Axes wants a request for the real one)."""
    user = get_user_model().objects.filter(username=username).first()
    return user if user is not None and user.is_active and user.check_password(password) else None


@pytest.fixture
def ensure_admin(monkeypatch):
    def run(username: str | None = None, password: str | None = None) -> str:
        for name, value in (("DJANGO_SUPERUSER_USERNAME", username), ("DJANGO_SUPERUSER_PASSWORD", password)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        out = StringIO()
        call_command("ensure_admin", stdout=out)
        lines = out.getvalue().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    return run


def test_a_fresh_database_gets_an_admin_with_a_one_time_password_printed_once(ensure_admin, django_user_model):
    line = ensure_admin()

    password = line.split("one-time password ")[1].split()[0]
    admin = authenticate(username="admin", password=password)
    assert admin is not None and role_of(admin) == Role.ADMIN
    assert PasswordChangeRequired.objects.filter(user=admin).exists()

    again = ensure_admin()

    assert password not in again and django_user_model.objects.count() == 1
    assert again.startswith(
        "Nothing changed: there are active admin accounts; 'admin' must still replace a one-time password"
    )


def test_the_environment_creates_the_named_admin(ensure_admin):
    line = ensure_admin("dana", "a long secret phrase")

    assert line == "Created the admin account 'dana' with the password in DJANGO_SUPERUSER_PASSWORD."
    dana = authenticate(username="dana", password="a long secret phrase")
    assert role_of(dana) == Role.ADMIN and not PasswordChangeRequired.objects.exists()


def test_the_environment_sets_the_password_of_an_existing_account_and_says_so(ensure_admin, django_user_model):
    django_user_model.objects.create_user("dana", password="old password", is_active=False)

    line = ensure_admin("dana", "a long secret phrase")

    assert line == (
        "Admin account 'dana' exists: set its password from DJANGO_SUPERUSER_PASSWORD, made it an active admin."
    )
    assert authenticate(username="dana", password="old password") is None
    assert role_of(authenticate(username="dana", password="a long secret phrase")) == Role.ADMIN
    assert ensure_admin("dana", "a long secret phrase") == (
        "Admin account 'dana' exists: kept its password from DJANGO_SUPERUSER_PASSWORD."
    )


def test_the_environment_replaces_the_one_time_password(ensure_admin):
    one_time = ensure_admin().split("one-time password ")[1].split()[0]

    line = ensure_admin("admin", "a long secret phrase")

    assert "a long secret phrase" not in line and line.endswith("set its password from DJANGO_SUPERUSER_PASSWORD.")
    assert authenticate(username="admin", password=one_time) is None
    assert not PasswordChangeRequired.objects.exists()


@pytest.mark.parametrize(("username", "password"), [("dana", None), (None, "a long secret phrase"), ("", "x")])
def test_one_variable_without_the_other_is_refused(ensure_admin, username, password, django_user_model):
    with pytest.raises(CommandError, match="Set both DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD"):
        ensure_admin(username, password)
    assert not django_user_model.objects.exists()


def test_an_admin_name_taken_by_another_account_is_not_made_an_admin(ensure_admin, django_user_model):
    django_user_model.objects.create_user("admin", password="theirs")

    with pytest.raises(CommandError, match="'admin' is taken by an account that is not an active admin"):
        ensure_admin()
    assert authenticate(username="admin", password="theirs") is not None


def test_an_admin_from_the_environment_closes_the_one_time_password_of_another(ensure_admin):
    one_time = ensure_admin().split("one-time password ")[1].split()[0]

    line = ensure_admin("dana", "a long secret phrase")

    assert line == (
        "Created the admin account 'dana' with the password in DJANGO_SUPERUSER_PASSWORD; "
        "the one-time password of 'admin' no longer works."
    )
    assert authenticate(username="admin", password=one_time) is None
    assert not PasswordChangeRequired.objects.exists()
    assert ensure_admin("dana", "a long secret phrase").endswith("kept its password from DJANGO_SUPERUSER_PASSWORD.")


def test_an_inactive_admin_does_not_count(ensure_admin, django_user_model):
    django_user_model.objects.create_superuser("gone", password="theirs", is_active=False)

    line = ensure_admin()

    assert "one-time password" in line and authenticate("admin", line.split("one-time password ")[1].split()[0])


def test_the_password_can_come_from_a_file(ensure_admin, monkeypatch, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("a long secret phrase\n")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD_FILE", str(secret))
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)

    assert ensure_admin("dana").startswith("Created the admin account 'dana'")
    assert authenticate("dana", "a long secret phrase") is not None


def test_setting_the_password_lifts_a_lockout_of_that_account(ensure_admin, django_user_model, client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    django_user_model.objects.create_superuser("dana", password="forgotten")
    for _ in range(3):
        client.post(reverse("login"), {"username": "dana", "password": "wrong"})

    ensure_admin("dana", "a long secret phrase")

    response = client.post(reverse("login"), {"username": "dana", "password": "a long secret phrase"})
    assert response.status_code == 302
