"""Unknown addresses and errors get the styled 404 and 500 pages, DEBUG on (the default
`make run`) or off; Django's technical pages only when a developer sets DEBUG_PAGES."""

import logging

import pytest
from django.contrib.auth.decorators import login_not_required
from django.template.loader import render_to_string
from django.test import Client
from django.urls import path, reverse

from project.urls import urlpatterns as project_urls

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

SECRET_DETAIL = "the vault combination is 1234"


@login_not_required
def boom(request):
    raise RuntimeError(SECRET_DETAIL)


urlpatterns = [path("boom/", boom), *project_urls]


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


def test_a_developer_can_ask_for_the_technical_pages(browser, settings):
    settings.DEBUG, settings.DEBUG_PAGES = True, True

    assert "URLconf" in browser.get("/no/such/page/").content.decode()
    assert SECRET_DETAIL in browser.get("/boom/").content.decode()


def test_the_500_page_renders_without_a_request():
    """Django renders 500.html with an empty context: nothing in it may need a request,
    a user or the database."""
    page = render_to_string("500.html")
    assert "<h1>Something went wrong</h1>" in page and "/static/css/relaydeck.css" in page
