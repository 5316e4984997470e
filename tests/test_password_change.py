"""The one-time password ensure_admin prints is good for one thing: setting a password of one's own."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from project.models import PasswordChangeRequired
from project.roles import Role

pytestmark = pytest.mark.django_db
CHANGE = "/password/"
NEW = "a phrase of my own choosing"


@pytest.fixture
def one_time_password(monkeypatch) -> str:
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue().split("one-time password ")[1].split()[0]


def logged_in(password: str) -> Client:
    browser = Client()
    response = browser.post(reverse("login"), {"username": "admin", "password": password})
    assert response.status_code == 302, "the login failed"
    return browser


def test_after_logging_in_with_it_every_page_asks_for_a_new_password_first(one_time_password):
    browser = logged_in(one_time_password)

    for url in ("/", reverse("campaigns:list"), reverse("smtp_settings:list"), "/admin/"):
        response = browser.get(url)
        assert response.status_code == 302 and response.url == CHANGE, url
    assert browser.post(reverse("campaigns:create"), {"name": "x"}).url == CHANGE
    htmx = browser.get(reverse("outbox:counts"), headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"] == CHANGE
    page = browser.get(CHANGE).content.decode()
    assert "You logged in with a one-time password" in page and 'name="csrfmiddlewaretoken"' in page


def test_a_new_password_frees_the_account_and_the_one_time_one_stops_working(one_time_password):
    browser = logged_in(one_time_password)

    response = browser.post(
        CHANGE, {"old_password": one_time_password, "new_password1": NEW, "new_password2": NEW}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("campaigns:list")
    assert "Your password is changed." in response.content.decode()
    assert browser.get(reverse("smtp_settings:list")).status_code == 200
    assert not PasswordChangeRequired.objects.exists()
    assert Client().post(reverse("login"), {"username": "admin", "password": one_time_password}).status_code == 200
    logged_in(NEW)


def test_a_refused_new_password_names_the_field_and_changes_nothing(one_time_password):
    browser = logged_in(one_time_password)

    response = browser.post(CHANGE, {"old_password": one_time_password, "new_password1": NEW, "new_password2": "no"})

    assert response.status_code == 200
    assert "New password confirmation: The two password fields didn’t match." in response.content.decode()
    assert PasswordChangeRequired.objects.exists() and browser.get("/").url == CHANGE
    logged_in(one_time_password)


def test_logging_out_stays_open(one_time_password):
    browser = logged_in(one_time_password)

    assert browser.post(reverse("logout")).status_code == 302
    assert browser.get("/").url.startswith(reverse("login"))


def test_a_password_set_from_the_environment_frees_a_waiting_session(one_time_password, monkeypatch):
    browser = logged_in(one_time_password)
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW)
    call_command("ensure_admin", stdout=StringIO())

    # The password changed under the session, which Django logs out; nothing asks for a new one.
    assert browser.get(reverse("campaigns:list")).url.startswith(reverse("login"))
    assert logged_in(NEW).get(reverse("campaigns:list")).status_code == 200


def test_accounts_without_the_flag_are_never_sent_there(viewer_client):
    assert viewer_client.get(reverse("campaigns:list")).status_code == 200
    assert viewer_client.get(CHANGE).status_code == 200  # anyone may change their own


def test_the_one_time_password_cannot_be_chosen_again(one_time_password):
    browser = logged_in(one_time_password)

    same = one_time_password
    response = browser.post(CHANGE, {"old_password": same, "new_password1": same, "new_password2": same})

    assert response.status_code == 200
    assert "New password: Choose a password other than the current one." in response.content.decode()
    assert PasswordChangeRequired.objects.exists() and browser.get("/").url == CHANGE


@pytest.mark.parametrize("elsewhere", ["changepassword", "the Django admin"])
def test_a_password_set_elsewhere_ends_the_flag(one_time_password, elsewhere, django_user_model, login_as):
    admin = django_user_model.objects.get(username="admin")
    if elsewhere == "changepassword":
        admin.set_password(NEW)  # as `manage.py changepassword` does
        admin.save()
    else:
        form = login_as(Role.ADMIN).post(
            reverse("admin:auth_user_password_change", args=[admin.pk]),
            {"password1": NEW, "password2": NEW, "usable_password": "true"},
        )
        assert form.status_code == 302

    assert logged_in(NEW).get(reverse("campaigns:list")).status_code == 200


def test_pages_open_without_a_login_stay_open_to_a_flagged_session(one_time_password):
    browser = logged_in(one_time_password)

    # An unsubscribe link clicked in the same browser reaches its page.
    unsubscribe = browser.get(reverse("unsubscribe", args=["not-a-token"]))
    assert unsubscribe.status_code == 404 and "This unsubscribe link is not valid" in unsubscribe.content.decode()
    assert browser.get(reverse("campaigns:list")).url == CHANGE
