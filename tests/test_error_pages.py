"""Unknown addresses, bad requests and errors get the styled 404, 400 and 500 pages, DEBUG
on (the default `make run`) or off, raised in a view or a middleware; Django's technical
pages only when a developer sets DEBUG_PAGES."""

import logging

import pytest
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import SuspiciousOperation
from django.template.loader import render_to_string
from django.test import Client
from django.urls import path, reverse

from project.urls import urlpatterns as project_urls

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

SECRET_DETAIL = "the vault combination is 1234"


@login_not_required
def boom(request):
    raise RuntimeError(SECRET_DETAIL)


@login_not_required
def suspicious(request):
    raise SuspiciousOperation(SECRET_DETAIL)


urlpatterns = [path("boom/", boom), path("suspicious/", suspicious), *project_urls]


@pytest.fixture
def browser() -> Client:
    return Client(raise_request_exception=False)


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_an_unknown_address_gets_the_styled_404(admin_client, settings, debug):
    settings.DEBUG = debug

    response = admin_client.get("/no/such/page/")

    content = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in content and "<code>/no/such/page/</code>" in content
    assert "relaydeck.css" in content
    assert "URLconf" not in content and "project.urls" not in content


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_a_missing_object_gets_the_styled_404(admin_client, settings, debug):
    settings.DEBUG = debug

    response = admin_client.get(reverse("smtp_settings:edit", args=[999]))

    assert response.status_code == 404 and "<h1>Page not found</h1>" in response.content.decode()


def test_a_missing_slash_still_redirects(admin_client, settings):
    settings.DEBUG = True
    response = admin_client.get("/settings/smtp")
    assert response.status_code == 301 and response.url == "/settings/smtp/"


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_an_error_gets_the_styled_500_without_a_traceback_and_is_logged(browser, settings, caplog, debug):
    settings.DEBUG = debug

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = browser.get("/boom/")

    content = response.content.decode()
    assert response.status_code == 500
    assert "<h1>Something went wrong</h1>" in content and "relaydeck.css" in content
    assert SECRET_DETAIL not in content and "Traceback" not in content and "RuntimeError" not in content
    [record] = [r for r in caplog.records if r.getMessage() == "Internal Server Error: /boom/"]
    assert SECRET_DETAIL in str(record.exc_info[1])


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"path": "/suspicious/"},  # raised in a view
        {"path": "/login/", "HTTP_HOST": "evil.example"},  # DisallowedHost, raised in a middleware
    ],
    ids=["in a view", "a forged Host header"],
)
def test_a_bad_request_gets_the_styled_400_without_a_traceback(browser, settings, debug, request_kwargs):
    settings.DEBUG = debug

    response = browser.get(**request_kwargs)

    content = response.content.decode()
    assert response.status_code == 400
    assert "<h1>Bad request</h1>" in content and "relaydeck.css" in content
    assert SECRET_DETAIL not in content and "Traceback" not in content and "evil.example" not in content


def test_a_client_asking_for_plain_text_gets_no_traceback_either(browser, settings):
    settings.DEBUG = True

    response = browser.get("/boom/", HTTP_ACCEPT="text/plain")

    assert response.status_code == 500 and response.content.decode() == "Server Error (500)\n"


def test_a_developer_can_ask_for_the_technical_pages(browser, settings):
    settings.DEBUG, settings.DEBUG_PAGES = True, True

    assert "URLconf" in browser.get("/no/such/page/").content.decode()
    assert SECRET_DETAIL in browser.get("/boom/").content.decode()
    assert "DisallowedHost" in browser.get("/login/", HTTP_HOST="evil.example").content.decode()


def test_the_500_page_renders_without_a_request():
    """Django renders 500.html with an empty context: nothing in it may need a request,
    a user or the database."""
    for template, heading in [("500.html", "Something went wrong"), ("400.html", "Bad request")]:
        page = render_to_string(template)
        assert f"<h1>{heading}</h1>" in page and "/static/css/relaydeck.css" in page
