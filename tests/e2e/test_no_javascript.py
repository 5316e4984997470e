"""The settings pages work as plain HTML forms: a browser without JavaScript adds a server,
fixes its mistake, tests it before and after saving, and edits it."""

from playwright.sync_api import Page, expect

from tests.e2e.conftest import ADMIN, log_in


def card(page: Page, name: str):
    return page.locator("article.card", has_text=name)


def test_settings_flow_without_javascript(stack, new_context, shots):
    page = log_in(new_context(java_script_enabled=False), *ADMIN)
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Add server").first.click()
    page.get_by_role("link", name="Local sandbox").click()  # a plain link: the preset's page
    expect(page).to_have_url(f"{stack.url}/settings/smtp/new/?preset=sandbox")
    page.get_by_label("Name", exact=True).fill("Plain sandbox")
    page.get_by_label("Port", exact=True).fill(str(stack.sandbox_port))
    page.get_by_label("Max. connections").fill("-3")
    page.get_by_role("button", name="Add server").click()
    expect(page.locator(".error-summary").get_by_role("link", name="Max. connections")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Plain sandbox")  # kept for the correction
    shots.take(page, "error-named")

    page.get_by_label("Max. connections").fill("5")
    page.get_by_role("button", name="Test connection").click()  # the form's values, unsaved
    expect(page.locator("#test-result-form")).to_contain_text("Connection works")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Plain sandbox")  # the form, as typed
    shots.take(page, "unsaved-values-tested")
    page.get_by_role("button", name="Add server").click()
    expect(page.locator(".messages")).to_contain_text("SMTP server “Plain sandbox” added.")
    expect(card(page, "Plain sandbox")).to_contain_text(f"127.0.0.1:{stack.sandbox_port}")
    shots.take(page, "added")

    card(page, "Plain sandbox").get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("heading", name="Connection test: Plain sandbox")).to_be_visible()
    expect(page.locator(".test-result")).to_contain_text("Connection works")
    shots.take(page, "saved-server-tested")

    page.get_by_role("link", name="Back to SMTP servers").click()
    card(page, "Plain sandbox").get_by_role("link", name="Edit").click()
    page.get_by_label("Name", exact=True).fill("Plain sandbox, renamed")
    page.get_by_label("Idle timeout (s)").fill("7")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("SMTP server “Plain sandbox, renamed” saved.")
    expect(card(page, "Plain sandbox, renamed").locator("dt:text-is('Idle') + dd")).to_have_text("7 s")
    shots.take(page, "edited")
