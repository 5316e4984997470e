"""The suppression list's page: everyone reads, senders add, import and remove (with a reason,
kept in the event log); the export streams what the filters select. Bad input is a message
naming what is wrong, never a traceback, and never a half-saved list."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns import eventlog
from campaigns.models import Event, Subscriber
from project.roles import Role
from smtp_settings.bounces.record import suppress
from smtp_settings.models import Suppression
from smtp_settings.suppressions import filters, importing

pytestmark = pytest.mark.django_db

LIST = reverse("suppressions:list")
ADD = reverse("suppressions:add")
IMPORT = reverse("suppressions:import")
EXPORT = reverse("suppressions:export")
Reason = Suppression.Reason


def remove_url(entry: Suppression) -> str:
    return reverse("suppressions:remove", args=[entry.pk])


def listed(response) -> list[str]:
    return re.findall(r'<tr id="suppression-\d+">\s*<td>([^<]*)</td>', response.content.decode())


def older(response) -> str:
    """Where the page's "Older" link leads."""
    return re.search(r'href="([^"]+)">Older', response.content.decode()).group(1).replace("&amp;", "&")


def on_the_list() -> dict[str, str]:
    return dict(Suppression.objects.values_list("email", "reason"))


def upload(content: bytes | str, name: str = "addresses.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content.encode() if isinstance(content, str) else content, "text/csv")


def read_csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def three():
    """A hard bounce, a complaint and an unsubscribe, oldest first."""
    return [
        suppress("gone@example.test", Reason.HARD_BOUNCE, "SMTP listener: 5.1.1 user unknown"),
        suppress("angry@example.org", Reason.COMPLAINT, "ESP webhook: spam report"),
        suppress("left@example.test", Reason.UNSUBSCRIBE, "With an unsubscribe link."),
    ]


# -- who may see and do what --


def test_nobody_logged_in_is_sent_to_the_login_page(client, three):
    for url in (LIST, EXPORT, remove_url(three[0])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    for url in (ADD, IMPORT, remove_url(three[0])):
        response = client.post(url, {"email": "x@example.test", "reason": "because"})
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    assert len(on_the_list()) == 3


def test_a_viewer_reads_the_list_but_cannot_change_it(viewer_client, three):
    page = viewer_client.get(LIST).content.decode()

    assert "gone@example.test" in page
    assert f'action="{ADD}' not in page and f'action="{IMPORT}"' not in page and "Remove</a>" not in page
    assert viewer_client.post(ADD, {"email": "new@example.test"}).status_code == 403
    assert viewer_client.post(IMPORT, {"file": upload("email\nnew@example.test\n")}).status_code == 403
    assert viewer_client.post(remove_url(three[0]), {"reason": "asked"}).status_code == 403
    assert viewer_client.get(remove_url(three[0])).status_code == 403
    assert len(on_the_list()) == 3


def test_a_sender_sees_the_forms_and_a_remove_link_per_address(sender_client, three):
    page = sender_client.get(LIST).content.decode()

    assert f'action="{ADD}"' in page and f'action="{IMPORT}"' in page
    for entry in three:
        assert f'href="{remove_url(entry)}"' in page


def test_the_main_navigation_leads_to_the_list(viewer_client):
    page = viewer_client.get(reverse("campaigns:list")).content.decode()
    assert f'<a href="{LIST}" >Suppressions</a>' in page


def test_actions_refuse_get_and_the_list_refuses_post(sender_client):
    assert sender_client.get(ADD).status_code == 405
    assert sender_client.get(IMPORT).status_code == 405
    assert sender_client.post(LIST).status_code == 405
    assert sender_client.post(EXPORT).status_code == 405


# -- the list --


def test_the_list_shows_each_address_newest_first_with_why_since_when_and_the_note(viewer_client, three):
    response = viewer_client.get(LIST)
    page = response.content.decode()

    assert listed(response) == ["left@example.test", "angry@example.org", "gone@example.test"]
    for label in ("Hard bounce", "Complaint", "Unsubscribe"):
        assert f">{label}</span>" in page
    assert "SMTP listener: 5.1.1 user unknown" in page
    assert timezone.localtime(three[0].created_at).strftime("%Y-%m-%d %H:%M") in page
    counts = dict(re.findall(r'\?reason=(\w+)">[^<]+</a></dt><dd>(\d+)</dd>', page))
    assert counts == {
        "hard_bounce": "1",
        "complaint": "1",
        "soft_bounces": "0",
        "unsubscribe": "1",
        "manual": "0",
        "import": "0",
    }


def test_search_finds_a_part_of_an_address_in_any_case(viewer_client, three):
    assert listed(viewer_client.get(LIST, {"q": "EXAMPLE.TEST"})) == ["left@example.test", "gone@example.test"]
    assert listed(viewer_client.get(LIST, {"q": "angry@"})) == ["angry@example.org"]
    page = viewer_client.get(LIST, {"q": "nobody"}).content.decode()
    assert "No address matches these filters." in page


def test_the_filter_by_reason_keeps_the_search(viewer_client, three):
    response = viewer_client.get(LIST, {"reason": "hard_bounce", "q": "example"})
    assert listed(response) == ["gone@example.test"]
    assert listed(viewer_client.get(LIST, {"reason": "manual"})) == []


def test_pages_hold_50_addresses_and_lead_to_older_ones_with_the_filters(viewer_client):
    Suppression.objects.bulk_create(
        [Suppression(email=f"user{n:03}@example.test", reason=Reason.IMPORT) for n in range(120)]
    )
    first = viewer_client.get(LIST, {"reason": "import"})
    second = viewer_client.get(older(first))
    third = viewer_client.get(older(second))

    assert listed(first) == [f"user{n:03}@example.test" for n in range(119, 69, -1)]
    assert "reason=import" in older(first)
    assert listed(second) == [f"user{n:03}@example.test" for n in range(69, 19, -1)]
    assert listed(third) == [f"user{n:03}@example.test" for n in range(19, -1, -1)]
    assert "Older" not in third.content.decode() and "Newest" in third.content.decode()


def test_the_counts_per_reason_have_thousands_separators(viewer_client):
    Suppression.objects.bulk_create(
        [Suppression(email=f"user{n:04}@example.test", reason=Reason.IMPORT) for n in range(1_234)]
    )
    assert re.search(r">Import</a></dt><dd>1,234</dd>", viewer_client.get(LIST).content.decode())


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"reason": "bogus"}, "Select a valid choice."),
        ({"q": "a\x00b"}, "Null characters are not allowed."),
        ({"q": "x" * 255}, "Ensure this value has at most 254 characters"),
        ({"before": "soon"}, "Enter a whole number."),
    ],
)
def test_filters_that_cannot_be_used_say_why(viewer_client, three, query, error):
    response = viewer_client.get(LIST, query)

    assert response.status_code == 400
    assert error in response.content.decode()
    assert viewer_client.get(EXPORT, query).status_code == 400


def test_what_is_shown_is_escaped(viewer_client):
    suppress("x@example.test", Reason.HARD_BOUNCE, "<script>alert(1)</script>")
    page = viewer_client.get(LIST).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- adding by hand --


def test_a_sender_adds_an_address_with_a_note(sender_client):
    response = sender_client.post(ADD, {"email": "  Bob@Example.TEST ", "note": "asked by phone"}, follow=True)

    entry = Suppression.objects.get()
    assert (entry.email, entry.reason, entry.note) == ("bob@example.test", "manual", "asked by phone")
    assert response.redirect_chain == [(LIST, 302)]
    assert "bob@example.test is on the suppression list: nothing will be sent to it." in response.content.decode()


def test_an_htmx_post_loads_the_list_again_as_a_whole(sender_client):
    response = sender_client.post(f"{ADD}?reason=manual", {"email": "bob@example.test"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == f"{LIST}?reason=manual"
    assert on_the_list() == {"bob@example.test": "manual"}


def test_without_a_note_the_entry_says_who_added_it(login_as):
    browser = login_as(Role.SENDER)
    browser.post(ADD, {"email": "bob@example.test"})
    assert re.fullmatch(r"Added by sender-\d+\.", Suppression.objects.get().note)


def test_an_address_on_the_list_already_keeps_its_first_reason(sender_client, three):
    response = sender_client.post(ADD, {"email": "GONE@example.test", "note": "again"})

    page = response.content.decode()
    assert response.status_code == 400
    assert "Email address: gone@example.test is on the list already, since" in page and "(hard bounce)." in page
    entry = Suppression.objects.get(email="gone@example.test")
    assert (entry.reason, entry.note) == ("hard_bounce", "SMTP listener: 5.1.1 user unknown")


def test_an_address_that_unsubscribed_added_by_hand_stops_transactional_mail_too(sender_client, three):
    response = sender_client.post(ADD, {"email": "left@example.test", "note": "Asked for no mail at all."})

    assert response.status_code == 302
    entry = Suppression.objects.get(email="left@example.test")
    assert entry.reason == "manual"
    assert re.fullmatch(
        r"Asked for no mail at all\. \(Unsubscribed since [0-9-]{10}: With an unsubscribe link\.\)", entry.note
    )
    assert Suppression.held_from_transactional(["left@example.test"]) == {"left@example.test"}


@pytest.mark.parametrize(
    ("email", "error"),
    [
        ("", "Email address: This field is required."),
        ("   ", "Email address: This field is required."),
        ("bob@", "Email address: &#x27;bob@&#x27; is not a valid email address."),
        ("bob@exam\u2028ple.test", "Email address: The address contains a line break or control character (U+2028)."),
        ("bob\x07@example.test", "Email address: The address contains a line break or control character (U+0007)."),
        ("bob@example.test\x00", "Email address: Null characters are not allowed."),
        ("jos\u00e9@example.test", "Email address: &#x27;josé@example.test&#x27; is not a valid email address."),
        ("a" * 250 + "@example.test", "Email address: Ensure this value has at most 254 characters"),
    ],
)
def test_an_address_that_cannot_be_one_is_a_field_error_and_saves_nothing(sender_client, email, error):
    response = sender_client.post(ADD, {"email": email})

    assert response.status_code == 400
    assert error in response.content.decode()
    assert on_the_list() == {}


def test_an_address_on_an_international_domain_is_taken(sender_client):
    sender_client.post(ADD, {"email": "Ana@Bücher.Example"})
    assert on_the_list() == {"ana@bücher.example": "manual"}


def test_a_post_without_the_csrf_token_is_refused(login_as):
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = login_as(Role.SENDER).cookies
    assert browser.post(ADD, {"email": "bob@example.test"}).status_code == 403
    assert on_the_list() == {}


# -- removing, with a reason --


def test_remove_asks_why_and_says_that_nobody_is_resubscribed(sender_client, three):
    response = sender_client.get(remove_url(three[0]))
    page = response.content.decode()

    assert response.status_code == 200
    assert "Take gone@example.test off the suppression list?" in page
    assert "This resubscribes nobody" in page
    assert 'name="reason"' in page and 'name="csrfmiddlewaretoken"' in page
    assert len(on_the_list()) == 3


@pytest.mark.parametrize("reason", ["", "   "])
def test_remove_without_a_reason_is_a_field_error_and_keeps_the_address(sender_client, three, reason):
    response = sender_client.post(remove_url(three[0]), {"reason": reason})

    assert response.status_code == 400
    assert "Why: This field is required." in response.content.decode()
    assert "gone@example.test" in on_the_list()


def test_remove_with_a_reason_takes_the_address_off_and_logs_why(login_as, three):
    ann = Subscriber.objects.create(email="left@example.test", status=Subscriber.Status.UNSUBSCRIBED)
    browser = login_as(Role.SENDER)

    response = browser.post(
        f"{remove_url(three[2])}?reason=unsubscribe", {"reason": "She asked to get mail again <b>"}, follow=True
    )
    eventlog.flush()

    assert "left@example.test" not in on_the_list() and len(on_the_list()) == 2
    assert response.redirect_chain == [(f"{LIST}?reason=unsubscribe", 302)]
    assert "left@example.test is off the suppression list: mail to it goes again." in response.content.decode()
    event = Event.objects.get(kind="unsuppressed")
    assert (event.recipient, event.text, event.server, event.campaign) == (
        "left@example.test",
        "She asked to get mail again <b>",
        None,
        None,
    )
    assert event.detail["was"] == "unsubscribe" and event.detail["by"].startswith("sender-")
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.UNSUBSCRIBED  # nobody is resubscribed
    log = browser.get(reverse("logs:list"), {"kind": "unsuppressed"}).content.decode()
    assert "left@example.test" in log and "She asked to get mail again &lt;b&gt;" in log


def test_removing_an_address_gone_already_is_404(sender_client, three):
    url = remove_url(three[0])
    sender_client.post(url, {"reason": "works again"})

    assert sender_client.post(url, {"reason": "works again"}).status_code == 404
    eventlog.flush()
    assert Event.objects.filter(kind="unsuppressed").count() == 1


def test_a_reason_that_is_too_long_is_a_field_error(sender_client, three):
    response = sender_client.post(remove_url(three[0]), {"reason": "x" * 501})
    assert response.status_code == 400 and "Ensure this value has at most 500 characters" in response.content.decode()
    assert "gone@example.test" in on_the_list()


# -- export --


def test_export_streams_every_address_as_csv_with_a_name_that_says_what_it_holds(viewer_client, three):
    response = viewer_client.get(EXPORT)
    rows = read_csv(response)

    today = timezone.localdate().isoformat()
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="suppressions-all-{today}.csv"'
    assert list(rows[0]) == ["email", "reason", "since", "note"]
    assert rows[-1] == {
        "email": "gone@example.test",
        "reason": "hard_bounce",
        "since": three[0].created_at.isoformat(),
        "note": "SMTP listener: 5.1.1 user unknown",
    }
    assert [row["email"] for row in rows] == ["left@example.test", "angry@example.org", "gone@example.test"]


def test_export_holds_what_the_filters_select(viewer_client, three):
    response = viewer_client.get(EXPORT, {"reason": "hard_bounce", "q": "@Example.test"})

    today = timezone.localdate().isoformat()
    assert [row["email"] for row in read_csv(response)] == ["gone@example.test"]
    assert response["Content-Disposition"] == (
        f'attachment; filename="suppressions-hard_bounce-matching-example-test-{today}.csv"'
    )


def test_a_hostile_search_never_reaches_the_file_name(viewer_client):
    response = viewer_client.get(EXPORT, {"q": '"; filename=evil.exe\r\n'})
    today = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == (
        f'attachment; filename="suppressions-all-matching-filename-evil-exe-{today}.csv"'
    )


def test_export_reads_in_keyset_chunks(viewer_client, monkeypatch):
    monkeypatch.setattr(filters, "EXPORT_CHUNK", 4)
    Suppression.objects.bulk_create([Suppression(email=f"u{n}@example.test", reason="import") for n in range(10)])

    chunks = list(viewer_client.get(EXPORT).streaming_content)

    assert len(chunks) == 3
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert [row["email"] for row in rows] == [f"u{n}@example.test" for n in range(9, -1, -1)]


def test_export_defuses_spreadsheet_formulas_in_notes(viewer_client):
    for n, note in enumerate(['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "ok = fine"]):
        suppress(f"u{n}@example.test", Reason.MANUAL, note)

    rows = read_csv(viewer_client.get(EXPORT))

    assert [row["note"] for row in reversed(rows)] == [
        '\'=HYPERLINK("http://evil")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\t=1",
        "ok = fine",
    ]


def test_an_export_imports_back_as_the_same_addresses_even_those_starting_like_a_formula(sender_client):
    """Addresses are written as they are (they were checked when they came in): a quote before
    "-news@example.test" would make another address of it on the way back."""
    addresses = ["-news@example.test", "+tag@example.test", "=eq@example.test", "plain@example.test"]
    for address in addresses:
        suppress(address, Reason.MANUAL, "-1+1")
    exported = b"".join(sender_client.get(EXPORT).streaming_content)
    Suppression.objects.all().delete()

    response = sender_client.post(IMPORT, {"file": upload(exported, "exported.csv")})

    assert imported(response) == ("4", "4", "0", "0")
    assert set(on_the_list()) == set(addresses)
    assert set(Suppression.objects.values_list("note", flat=True)) == {"'-1+1"}  # notes stay defused


# -- import --


def imported(response) -> tuple[str, ...]:
    text = re.sub(r"<[^>]+>", "", response.content.decode())
    counts = r"([\d,]+) rows? read:\s+([\d,]+) added, ([\d,]+) on the list already.*?([\d,]+) invalid"
    return re.search(counts, text, re.S).groups()


def invalid_rows(response) -> dict[str, str]:
    return dict(re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td></tr>', response.content.decode()))


def test_import_puts_each_address_on_the_list_with_its_note(login_as):
    browser = login_as(Role.SENDER)
    content = "Name,EMAIL,note,reason\nAnn,ann@example.test,asked in 2019,hard_bounce\nBob,Bob@Example.test,,\n"

    response = browser.post(IMPORT, {"file": upload(content, "old-esp.csv")})

    assert response.status_code == 200
    assert imported(response) == ("2", "2", "0", "0")
    entries = {entry.email: entry for entry in Suppression.objects.all()}
    assert {email: entry.reason for email, entry in entries.items()} == {
        "ann@example.test": "import",  # a reason column changes nothing
        "bob@example.test": "import",
    }
    assert entries["ann@example.test"].note == "asked in 2019"
    assert re.fullmatch(r"Imported by sender-\d+ from “old-esp.csv”\.", entries["bob@example.test"].note)


def test_imported_notes_are_kept_as_one_line_without_control_or_bidirectional_characters(sender_client):
    note = "asked\x1b[31m by\x07 \u202egnol\u202c mail\u2028on\r\n2019-05-01\u2066"

    response = sender_client.post(IMPORT, {"file": upload(f'email,note\nann@example.test,"{note}"\n')})

    assert imported(response) == ("1", "1", "0", "0")
    assert Suppression.objects.get().note == "asked [31m by gnol mail on 2019-05-01"


def test_import_keeps_addresses_on_the_list_already_and_counts_repeats_once(sender_client, three, monkeypatch):
    monkeypatch.setattr(importing, "CHUNK_ROWS", 2)  # repeats across chunks too
    content = "email\nnew1@example.test\nGONE@example.test\nnew1@example.test\nnew2@example.test\nnew2@example.test\n"

    response = sender_client.post(IMPORT, {"file": upload(content)})

    assert imported(response) == ("5", "2", "3", "0")
    assert on_the_list() == {
        "gone@example.test": "hard_bounce",
        "angry@example.org": "complaint",
        "left@example.test": "unsubscribe",
        "new1@example.test": "import",
        "new2@example.test": "import",
    }
    assert Suppression.objects.get(email="gone@example.test").note == "SMTP listener: 5.1.1 user unknown"


def test_invalid_rows_are_reported_by_line_and_the_valid_ones_imported(sender_client):
    content = (
        b"email,note\n"
        b"ok1@example.test,fine\n"  # 2
        b"bob@,typo\n"  # 3
        b",no address\n"  # 4
        b"carl@exam\xe2\x80\xa8ple.test,line separator\n"  # 5
        b"\xff\xfenot utf-8@example.test,x\n"  # 6
        b'dan@example.test,"two\nlines"\n'  # 7 (and 8)
        b"eve@example.test\n"  # 9
        b"jos\xc3\xa9@example.test,accent\n"  # 10
        b"\n"
        b"fay@example.test," + b"x" * 2001 + b"\n"  # 12
    )

    response = sender_client.post(IMPORT, {"file": upload(content)})

    assert imported(response) == ("9", "2", "0", "7")
    assert set(on_the_list()) == {"ok1@example.test", "dan@example.test"}
    assert Suppression.objects.get(email="dan@example.test").note == "two lines"  # one line, as it is shown
    assert invalid_rows(response) == {
        "3": "&#x27;bob@&#x27; is not a valid email address",
        "4": "no email address",
        "5": "the address contains a line break or control character (U+2028)",
        "6": "not UTF-8 text",
        "9": "has 1 columns, the header has 2",
        "10": "&#x27;josé@example.test&#x27; is not a valid email address",
        "12": "the note is longer than 2,000 characters",
    }


def test_a_row_with_a_nul_character_past_the_start_is_reported(sender_client):
    content = "email,note\n" + "".join(f"u{n}@example.test,ok\n" for n in range(300)) + "eve@example.test,a\x00b\n"

    response = sender_client.post(IMPORT, {"file": upload(content)})

    assert imported(response) == ("301", "300", "0", "1")
    assert invalid_rows(response) == {"302": "contains a NUL character"}


def test_a_file_with_a_byte_order_mark_imports(sender_client):
    response = sender_client.post(IMPORT, {"file": upload("\ufeffemail\r\nann@example.test\r\n".encode())})
    assert imported(response) == ("1", "1", "0", "0")


@pytest.mark.parametrize(
    ("file", "error"),
    [
        (upload("email\nann@example.test\n", "addresses.xlsx"), "is not a .csv file"),
        (upload(b"PK\x03\x04\x00\x00binary", "addresses.csv"), "is not text (a spreadsheet?)"),
        (upload("", "addresses.csv"), "The submitted file is empty."),
        (upload("\n\n", "addresses.csv"), "the file is empty: it needs a header row with an &#x27;email&#x27; column"),
        (upload("name,address\nAnn,ann@example.test\n"), "the header row has no &#x27;email&#x27; column"),
        (upload("email,Email\nann@example.test,x\n"), "the header row names the column &#x27;email&#x27; more than"),
        (upload("e\xe9mail\nann@example.test\n".encode("latin-1")), "line 1: not UTF-8 text, in the header row"),
    ],
)
def test_a_file_that_cannot_be_imported_is_a_field_error_and_imports_nothing(sender_client, file, error):
    response = sender_client.post(IMPORT, {"file": file})

    assert response.status_code == 400
    page = response.content.decode()
    assert "CSV file: " in page and error in page
    assert on_the_list() == {}


def test_without_a_file_the_field_says_so(sender_client):
    response = sender_client.post(IMPORT, {})
    assert response.status_code == 400 and "CSV file: This field is required." in response.content.decode()


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(sender_client, monkeypatch):
    monkeypatch.setattr(importing, "MAX_BYTES", 30)
    response = sender_client.post(IMPORT, {"file": upload("email\n" + "ann@example.test\n" * 2)})

    assert response.status_code == 400
    assert "is too large: it has 40 bytes, and an import may have at most 30." in response.content.decode()
    assert on_the_list() == {}


def test_an_import_stops_at_the_row_limit_and_says_where(sender_client, monkeypatch):
    monkeypatch.setattr(importing, "MAX_ROWS", 3)
    content = "email\n" + "".join(f"u{n}@example.test\n" for n in range(5))

    response = sender_client.post(IMPORT, {"file": upload(content)})

    assert imported(response) == ("3", "3", "0", "0")
    assert "it stopped at line 5. Import the rest from there" in response.content.decode()
    assert set(on_the_list()) == {"u0@example.test", "u1@example.test", "u2@example.test"}


def test_only_the_first_invalid_rows_are_listed(sender_client, monkeypatch):
    monkeypatch.setattr(importing, "MAX_ERRORS", 2)
    response = sender_client.post(IMPORT, {"file": upload("email\nx\ny\nz\n")})

    assert imported(response) == ("3", "0", "0", "3")
    assert list(invalid_rows(response)) == ["2", "3"]
    assert "(the first 2 of 3)" in response.content.decode()


def test_an_import_a_hundred_thousand_rows_long_takes_seconds(sender_client):
    content = "email\n" + "".join(f"user{n}@example.test\n" for n in range(100_000))
    started = timezone.now()

    response = sender_client.post(IMPORT, {"file": upload(content)})

    assert imported(response) == ("100,000", "100,000", "0", "0")
    assert timezone.now() - started < timedelta(seconds=15)
    assert listed(sender_client.get(LIST, {"q": "user99999@"})) == ["user99999@example.test"]
