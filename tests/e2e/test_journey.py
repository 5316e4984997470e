"""A new user's first campaign, start to end, in one browser: the journey of issue #14."""

import re
import time
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.conftest import ADMIN, Screenshots, Stack, log_in

SUBSCRIBERS = 500
BAD_ROWS = {101: "not-an-address", 202: "two@@example.test", 303: "nobody@"}  # line: email
GOOD = SUBSCRIBERS - len(BAD_ROWS)
RATE = 50  # msg/s: a run of ten seconds, long enough to pause in the middle of it
FROM = "Relaydeck journey <news@example.test>"
PREVIEW_AS = "reader7@example.test"  # line 7 of the file: Reader 7
TEST_TO = "me@example.test"


def write_csv(path: Path) -> Path:
    """`SUBSCRIBERS` rows after the header, `BAD_ROWS` among them at their file lines."""
    lines = ["email,name,city"]
    for line in range(2, SUBSCRIBERS + 2):
        email = BAD_ROWS.get(line, f"reader{line}@example.test")
        lines.append(f"{email},Reader {line},Lyon")
    path.write_text("\n".join(lines) + "\n")
    return path


def figures(page: Page):
    return page.locator("#campaign-progress .figures")


def status(page: Page):
    return page.locator("#campaign-progress h2 .badge")


def htmx_ready(page: Page) -> None:
    """Until the page has loaded, htmx with it: a control htmx drives, used before, would do a
    plain request instead (which works, but leaves another page than the step expects)."""
    page.wait_for_load_state()


def wait_for_sent(page: Page, least: int, most: int) -> None:
    """Until the progress bar, refreshed by the page itself, stands between these shares."""
    page.wait_for_function(
        "([least, most]) => { const bar = document.querySelector('#campaign-progress progress');"
        " return bar && +bar.value >= least && +bar.value <= most; }",
        arg=[least, most],
        timeout=60_000,
    )


# -- the steps, in order --


def step_1_log_in(context: BrowserContext, shots: Screenshots) -> Page:
    page = log_in(context, *ADMIN)
    expect(page).to_have_title(re.compile("Campaigns"))
    shots.take(page, "logged-in")
    return page


def step_2_add_server_from_preset(page: Page, shots: Screenshots, stack: Stack) -> None:
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Add server").first.click()
    page.get_by_role("link", name="Local sandbox").click()
    expect(page.locator(".preset-note")).to_contain_text("Local sandbox preset")
    expect(page.get_by_label("Host", exact=True)).to_have_value("127.0.0.1")
    page.get_by_label("Name", exact=True).fill("Journey sandbox")
    page.get_by_label("Port", exact=True).fill("70000")
    shots.take(page, "preset-with-bad-port")
    page.get_by_role("button", name="Add server").click()
    summary = page.locator(".error-summary")
    expect(summary).to_contain_text("Nothing was saved")
    expect(summary.get_by_role("link", name="Port")).to_be_visible()
    expect(page.locator(".field.invalid")).to_contain_text("Port")
    shots.take(page, "port-error-named")
    page.get_by_label("Port", exact=True).fill(str(stack.sandbox_port))
    page.get_by_role("button", name="Add server").click()
    expect(page.locator("article.card", has_text="Journey sandbox")).to_contain_text(f"127.0.0.1:{stack.sandbox_port}")
    htmx_ready(page)
    shots.take(page, "server-added")


def step_3_test_connection(page: Page, shots: Screenshots) -> None:
    card = page.locator("article.card", has_text="Journey sandbox")
    card.get_by_role("button", name="Test connection").click()
    result = card.locator(".test-result")
    expect(result).to_contain_text("Connection works")
    expect(result.locator("tr.failed")).to_have_count(0)
    shots.take(page, "connection-tested")


def step_4_import_csv(page: Page, shots: Screenshots, csv: Path) -> None:
    page.get_by_role("link", name="Lists").click()
    page.get_by_label("Name").fill("Journey readers")
    page.get_by_role("button", name="Create list").click()
    expect(page.get_by_role("heading", name="Journey readers")).to_be_visible()
    htmx_ready(page)
    page.get_by_label("CSV file").set_input_files(csv)
    page.get_by_role("button", name="Upload and import").click()
    job = page.locator(".import-status").first
    expect(job.locator(".badge")).to_have_text("Done", timeout=30_000)
    expect(job.locator(".import-counts")).to_contain_text(f"{SUBSCRIBERS} rows read: {GOOD} new, 0 merged, 3 invalid")
    invalid = job.locator("table.import-errors tbody tr")
    expect(invalid).to_have_count(len(BAD_ROWS))
    for row, line in zip(invalid.all(), BAD_ROWS, strict=True):
        expect(row.locator("td").first).to_have_text(str(line))
    expect(page.locator("#subscribers .pager")).to_contain_text(f"{GOOD} subscribers")
    expect(page.locator("#list-counts")).to_have_text(f"{GOOD} active of {GOOD} subscribers.")  # no reload
    shots.take(page, "imported-3-invalid")


def step_5_compose_preview_and_test_send(page: Page, shots: Screenshots, tests_context: BrowserContext) -> None:
    """Compose; preview the unsaved form as a chosen subscriber; save; send a test message and
    find it in the sandbox inbox, its unsubscribe link saying it was a test."""
    page.get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="New campaign").first.click()
    page.get_by_label("Name", exact=True).fill("Journey campaign")
    page.get_by_label("From", exact=True).fill(FROM)
    page.get_by_label("Subject").fill("Hello {{ subscriber.name }}")
    page.get_by_label("HTML body").fill(
        "<h1>Hello {{ subscriber.name }} in {{ subscriber.attributes.city }}</h1>\n"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    )
    page.get_by_role("group", name="Lists").get_by_label("Journey readers").check()
    page.get_by_role("group", name="Servers").get_by_label("Journey sandbox").check()
    page.get_by_label("Rate limit", exact=True).fill(str(RATE))
    shots.take(page, "composed")

    htmx_ready(page)
    page.get_by_label("Preview as").fill(PREVIEW_AS)
    page.get_by_role("button", name="Preview", exact=True).click()
    preview = page.locator("#unsaved-preview")
    expect(preview).to_contain_text(f"As {PREVIEW_AS} would receive it")
    expect(preview.locator(".message-headers .subject")).to_have_text("Hello Reader 7")
    expect(preview.frame_locator("iframe.html-part").get_by_role("heading")).to_have_text("Hello Reader 7 in Lyon")
    expect(preview.locator(".text-part")).to_contain_text("Hello Reader 7 in Lyon")
    expect(page).to_have_url(re.compile(r"/campaigns/new/$"))  # previewed, not saved
    shots.take(page, "previewed-before-saving")

    page.get_by_role("button", name="Create campaign").click()
    expect(page.get_by_role("heading", name="Journey campaign")).to_be_visible()
    expect(status(page)).to_have_text("Draft")
    htmx_ready(page)
    test_send = page.locator("section.test-send")
    test_send.get_by_role("textbox").fill(TEST_TO)
    test_send.get_by_role("button", name="Send test").click()
    expect(page.locator("#test-send-result")).to_contain_text(f"Accepted for {TEST_TO}")
    shots.take(page, "test-sent")

    link = unsubscribe_link_in_inbox(page, TEST_TO)
    shots.take(page, "test-message-in-inbox")
    reader = tests_context.new_page()
    reader.goto(link)
    expect(reader.get_by_role("heading", name="This was a test message")).to_be_visible()
    expect(reader.locator(".unsubscribe")).to_contain_text("Nothing was changed")
    shots.take(reader, "test-unsubscribe-link")
    reader.close()
    page.get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="Journey campaign").click()
    expect(status(page)).to_have_text("Draft")
    htmx_ready(page)


def unsubscribe_link_in_inbox(page: Page, to: str) -> str:
    """Open the newest message to `to` in the sandbox inbox and return the unsubscribe link its
    page lists. The sandbox writes a message to the inbox just after accepting it: the inbox
    is opened again until the message is there."""
    deadline = time.monotonic() + 10
    while True:
        page.get_by_role("link", name="Sandbox inbox").click()
        expect(page.get_by_role("heading", name="Sandbox inbox")).to_be_visible()
        row = page.locator("#sandbox-inbox tbody tr", has=page.locator("td:nth-child(3)", has_text=to)).first
        if row.count() or time.monotonic() > deadline:
            break
    expect(row).to_be_visible()
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Sandbox message")).to_be_visible()
    expect(page.locator(".sandbox-note")).to_contain_text("delivers nothing further")
    unsubscribe = page.locator("#message-links a[href*='/u/']").first
    expect(unsubscribe).to_be_visible()
    return unsubscribe.get_attribute("href")


def step_6_launch(page: Page, shots: Screenshots) -> None:
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
    page.locator("#campaign-progress").get_by_role("button", name="Launch").click()
    expect(status(page)).to_have_text("Running")
    shots.take(page, "launched")


def step_7_pause_and_resume(page: Page, shots: Screenshots) -> None:
    wait_for_sent(page, 1, 50)  # what a claimed batch adds before the pause holds leaves it mid-run
    page.locator("#campaign-progress").get_by_role("button", name="Pause").click()
    expect(status(page)).to_have_text("Paused", timeout=30_000)
    paused_at = page.locator("#campaign-progress progress").evaluate("bar => +bar.value")
    assert 0 < paused_at < 100, f"paused at {paused_at}%, not in the middle of the run"
    expect(page.locator("#campaign-progress .warn")).to_contain_text("Paused by hand")
    shots.take(page, "paused")
    page.locator("#campaign-progress").get_by_role("button", name="Resume").click()
    expect(status(page)).to_have_text("Running")
    shots.take(page, "resumed")


def step_6_reaches_100_percent(page: Page, shots: Screenshots) -> None:
    expect(status(page)).to_have_text("Finished", timeout=60_000)
    expect(figures(page)).to_contain_text(f"{GOOD} of {GOOD} done (100.0%)")
    expect(page.locator("#campaign-progress .count-sent")).to_have_text(str(GOOD))
    assert page.evaluate("window.loadedOnce"), "the page was reloaded"
    shots.take(page, "finished")


def step_8_log_of_421s(page: Page, shots: Screenshots) -> None:
    page.get_by_role("link", name="Logs").click()
    filters = page.get_by_role("search", name="Filter events")
    filters.get_by_label("Campaign").select_option(label="Journey campaign")
    filters.get_by_label("Reply code").fill("421")
    filters.get_by_role("button", name="Filter").click()
    rows = page.locator("#event-rows tr")
    expect(rows.first).to_be_visible()
    codes = page.locator("#event-rows td:nth-child(5)").all_inner_texts()
    assert codes and set(codes) == {"421"}, codes
    expect(page.locator("#event-rows")).to_contain_text("Maximum message count per session reached")
    chart = page.locator(".log-summary figure.sending-chart svg")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.sent, rect[class*=sent]").first).to_be_attached()
    shots.take(page, "log-of-421s")


def step_9_unsubscribe_logged_out(page: Page, shots: Screenshots, logged_out: BrowserContext) -> str:
    """Open one of the campaign's messages in the sandbox inbox and follow its unsubscribe link
    in a browser that is not logged in; return the address unsubscribed."""
    page.get_by_role("link", name="Sandbox inbox").click()
    rows = page.locator("#sandbox-inbox tbody tr", has_text="Hello Reader")
    expect(rows.first).to_be_visible()
    expect(page.locator("#sandbox-inbox tbody tr")).to_have_count(50)  # a page of the newest
    address = re.search(r"reader\d+@example\.test", rows.nth(3).locator("td:nth-child(3)").inner_text())[0]
    shots.take(page, "sandbox-inbox")
    link = unsubscribe_link_in_inbox(page, address)
    expect(page.locator(".message-preview")).to_contain_text(address)
    shots.take(page, "sandbox-message")

    stranger = logged_out.new_page()
    stranger.goto(link)
    expect(stranger.get_by_role("button", name="Log out")).to_have_count(0)
    expect(stranger.get_by_role("heading", name="Unsubscribe?")).to_be_visible()
    expect(stranger.locator(".unsubscribe")).to_contain_text(address)
    shots.take(stranger, "unsubscribe-asked")
    stranger.get_by_role("button", name="Unsubscribe").click()
    expect(stranger.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    expect(stranger.locator(".unsubscribe")).to_contain_text(address)
    shots.take(stranger, "unsubscribed")
    return address


def step_10_subscriber_shows_unsubscribed(page: Page, shots: Screenshots, address: str) -> None:
    page.get_by_role("link", name="Lists").click()
    page.get_by_role("link", name="Journey readers").click()
    page.get_by_role("searchbox", name="Search subscribers").fill(address)
    page.get_by_role("button", name="Search").click()  # with htmx loaded or not yet
    row = page.locator("#subscribers tbody tr", has_text=address)
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("Unsubscribed")
    expect(row.get_by_role("button", name="Reactivate")).to_be_visible()
    shots.take(page, "subscriber-unsubscribed")


def test_a_new_users_first_campaign(stack, new_context, shots, tmp_path):
    page = step_1_log_in(new_context(), shots)
    step_2_add_server_from_preset(page, shots, stack)
    step_3_test_connection(page, shots)
    step_4_import_csv(page, shots, write_csv(tmp_path / "readers.csv"))
    step_5_compose_preview_and_test_send(page, shots, new_context())
    step_6_launch(page, shots)
    step_7_pause_and_resume(page, shots)
    step_6_reaches_100_percent(page, shots)
    step_8_log_of_421s(page, shots)
    address = step_9_unsubscribe_logged_out(page, shots, new_context())
    step_10_subscriber_shows_unsubscribed(page, shots, address)
