"""What a viewer may not do, seen from the browser: no Launch button, and a 403 for the POST
made anyway with the viewer's own session and CSRF token."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import VIEWER, csrf_token, log_in


@pytest.fixture(scope="module")
def viewer(stack):
    """The demo data (a draft campaign, ready to launch) and a user with the viewer role."""
    stack.manage("demo", "--subscribers=5")
    username, password = VIEWER
    stack.manage(
        "shell",
        "--command",
        f"from django.contrib.auth import get_user_model; get_user_model().objects.create_user({username!r}, "
        f"password={password!r})",
    )
    stack.manage("set_role", username, "viewer")
    return VIEWER


def test_a_viewer_sees_no_launch_button_and_may_not_launch(new_context, viewer, shots):
    page = log_in(new_context(), *viewer)
    page.get_by_role("link", name="Demo campaign").click()
    progress = page.locator("#campaign-progress")
    expect(progress.locator(".badge")).to_have_text("Draft")
    expect(progress.get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("button", name="Send test")).to_have_count(0)
    shots.take(page, "no-launch-button")

    response = page.request.post(f"{page.url}launch/", form={"csrfmiddlewaretoken": csrf_token(page)})
    assert response.status == 403
    assert "This needs the sender role; your account has the viewer role." in response.text()

    page.reload()
    expect(progress.locator(".badge")).to_have_text("Draft")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("link", name="Add server")).to_have_count(0)
    shots.take(page, "no-add-server")
