"""Layout a person sees, measured in the browser: what a view test's HTML cannot show."""

from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN, log_in


def test_the_preview_pages_show_button_sits_beside_its_input_at_its_own_width(stack, new_context, shots):
    stack.manage("demo", "--subscribers=5")
    page = log_in(new_context(), *ADMIN)
    page.get_by_role("link", name="Demo campaign").first.click()
    page.get_by_role("link", name="Preview").first.click()
    field, show = page.get_by_label("Preview as"), page.get_by_role("button", name="Show")
    expect(show).to_be_visible()
    field_box, show_box = field.bounding_box(), show.bounding_box()
    shots.take(page, "preview-as")

    assert show_box["width"] < 120, "a button as wide as its label, not a stretched track"
    assert show_box["x"] >= field_box["x"] + field_box["width"]  # beside the input, after it
    assert abs(show_box["y"] + show_box["height"] / 2 - (field_box["y"] + field_box["height"] / 2)) < 2
