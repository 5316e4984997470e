"""After a POST, htmx loads the next page whole; a plain form post is redirected to it."""

import pytest
from django.test import RequestFactory
from django_htmx.middleware import HtmxDetails

from project.htmx import redirect_to


def _post(htmx: bool = False):
    request = RequestFactory().post("/", headers={"HX-Request": "true"} if htmx else {})
    request.htmx = HtmxDetails(request)
    return request


@pytest.mark.parametrize("to, args", [("campaigns:detail", {"pk": 7}), ("/campaigns/7/", {})])
def test_a_plain_post_is_redirected(to, args):
    response = redirect_to(_post(), to, **args)

    assert response.status_code == 302 and response.url == "/campaigns/7/"


def test_htmx_is_told_to_load_the_page_rather_than_swap_it_in():
    response = redirect_to(_post(htmx=True), "campaigns:detail", 7)

    assert response.status_code == 200 and response["HX-Redirect"] == "/campaigns/7/"
    assert "Location" not in response
