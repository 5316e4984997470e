"""The sandbox inbox: the SMTP sandbox keeps the last N messages it received (a Maildir its
process writes), and /sandbox/ shows them: a list, newest first, and each message's links,
HTML (in a sandboxed frame), text and headers, bounded and escaped whatever came in."""

import re
import resource
import signal
import smtplib
import stat
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from django.urls import reverse

from project.roles import Role
from smtp_settings.sandbox_inbox.maildir import STORED_BYTES, InboxWriter
from tests.test_security import inline_code

pytestmark = pytest.mark.django_db
LIST = "/sandbox/"


@pytest.fixture
def inbox(tmp_path, settings):
    settings.SANDBOX_INBOX_DIR = tmp_path / "inbox"
    return settings.SANDBOX_INBOX_DIR


@pytest.fixture
def admin(login_as):
    return login_as(Role.ADMIN)


def send(port: int, data: bytes, to: str = "reader@example.test", mail_from: str = "news@example.test") -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail(mail_from, [to], data)


def plain(subject: str, body: str = "Hello") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "News <news@example.test>", "reader@example.test", subject
    message.set_content(body)
    return bytes(message)


def received(inbox, port_of, *messages: bytes, keep: int = 10) -> None:
    """Send `messages` to an in-process sandbox keeping its inbox in `inbox`, then stop it (which
    writes what waits)."""
    sandbox = port_of(inbox=inbox, inbox_keep=keep)
    for data in messages:
        send(sandbox.port, data)
    sandbox.stop()


def subjects(page: str) -> list[str]:
    return re.findall(r'<a href="/sandbox/[^"]+/">([^<]*)</a>', page)


def test_the_sandbox_process_keeps_the_last_n_messages_and_the_list_shows_them_newest_first(
    sandbox_process, inbox, admin
):
    sandbox = sandbox_process("--inbox", "3", "--inbox-dir", str(inbox))
    for n in range(5):
        send(sandbox.port, plain(f"message {n}"))
    assert sandbox.stop()["inbox_written"] == 5

    page = admin.get(LIST).content.decode()

    assert len(list((inbox / "new").iterdir())) == 3
    assert '<table class="list-table" id="sandbox-inbox">' in page
    assert subjects(page) == ["message 4", "message 3", "message 2"]
    assert "News &lt;news@example.test&gt;" in page
    assert "The SMTP sandbox delivers nothing further: mail sent to it never reaches anyone." in page

    again = sandbox_process("--inbox", "3", "--inbox-dir", str(inbox))  # a restart keeps counting what it has
    send(again.port, plain("message 5"))
    again.stop()
    assert subjects(admin.get(LIST).content.decode()) == ["message 5", "message 4", "message 3"]


def test_without_the_option_the_sandbox_keeps_nothing(sandbox_process, inbox):
    sandbox = sandbox_process()
    send(sandbox.port, plain("hello"))

    assert sandbox.stop()["inbox_written"] == 0 and not inbox.exists()


def test_the_list_pages_through_older_messages(inbox, smtp_sandbox, admin, monkeypatch):
    monkeypatch.setattr("smtp_settings.sandbox_inbox.views.PAGE_SIZE", 2)
    received(inbox, smtp_sandbox, *(plain(f"message {n}") for n in range(5)))

    first = admin.get(LIST).content.decode()
    older = re.search(r'href="\?before=([^"]+)" rel="next"', first).group(1)
    second = admin.get(f"{LIST}?before={older}").content.decode()
    oldest = re.search(r'href="\?before=([^"]+)" rel="next"', second).group(1)
    last = admin.get(f"{LIST}?before={oldest}").content.decode()

    assert (subjects(first), subjects(second), subjects(last)) == (
        ["message 4", "message 3"],
        ["message 2", "message 1"],
        ["message 0"],
    )
    assert 'rel="next"' not in last
    assert subjects(admin.get(f"{LIST}?before=../../etc").content.decode()) == subjects(first)  # not a name: ignored


def test_an_empty_inbox_says_what_would_show_there(inbox, admin):
    page = admin.get(LIST).content.decode()

    assert "No messages." in page and "delivers nothing further" in page


def campaign_like() -> bytes:
    message = EmailMessage()
    message["From"] = "News <news@example.test>"
    message["To"] = "reader@example.test"
    message["Subject"] = "Grüße <script>alert(1)</script>"
    message["List-Unsubscribe"] = "<https://mail.example.test/u/abc/>, <mailto:leave@example.test?subject=x>"
    message.set_content("Hello. Leave: https://mail.example.test/u/abc/")
    message.add_alternative(
        '<p class="x">Hello "you" <script>alert(1)</script><img src="https://tracker.example.test/p.gif"></p>'
        '<a href="https://mail.example.test/u/abc/?a=1&amp;b=2">Unsubscribe</a>'
        '<a href=" java\tscript:alert(2)">click</a><a href="data:text/html,x">data</a>',
        subtype="html",
    )
    return bytes(message)


def test_a_message_shows_its_links_its_html_in_a_sandboxed_frame_its_text_and_headers(inbox, smtp_sandbox, admin):
    received(inbox, smtp_sandbox, campaign_like())
    [name] = [path.name for path in (inbox / "new").iterdir()]

    response = admin.get(f"{LIST}{name}/")

    page = response.content.decode()
    assert response.status_code == 200 and inline_code(page) == []
    assert "Grüße &lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    frame = re.search(r'<iframe class="html-part" sandbox="allow-popups allow-popups-to-escape-sandbox"[^>]*>', page)
    assert f'src="{LIST}{name}/html/"' in frame.group(0)
    links = page[page.index('<ul id="message-links">') :]
    links = links[: links.index("</ul>")]
    opened = re.findall(r'<a href="([^"]+)" target="_blank" rel="noopener noreferrer">', links)
    assert opened == [
        "https://mail.example.test/u/abc/",
        "mailto:leave@example.test?subject=x",
        "https://mail.example.test/u/abc/?a=1&amp;b=2",
    ]
    assert "<code>javascript:alert(2)</code>" in links and "<code>data:text/html,x</code>" in links
    assert "in the List-Unsubscribe" in links and "in the HTML part" in links
    assert '<pre class="text-part">Hello. Leave: https://mail.example.test/u/abc/' in page
    assert '<th scope="row">Return-Path</th><td>&lt;news@example.test&gt;</td>' in page
    assert '<th scope="row">Delivered-To</th><td>&lt;reader@example.test&gt;</td>' in page


def test_hostile_messages_are_kept_bounded_and_shown_escaped(inbox, smtp_sandbox, admin):
    huge = plain("huge", "x" * 76 + "\n") + (b"y" * 76 + b"\r\n") * 40_000
    control = b"From: a@example.test\r\nSubject: \x1b[31mred\x07 =?utf-8?q?Gr=C3=BC=C3=9Fe?= \xff\xfe\r\n\r\nhi\r\n"
    bad_charset = (
        b"From: a@example.test\r\nSubject: bad charset\r\nContent-Type: text/plain; charset=x-nonsense\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\xff\r\n"
    )
    nested = b"Subject: deep\r\n" + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 3000
    unreadable_links = (
        b"From: a@example.test\r\nSubject: bad links\r\nList-Unsubscribe: <http://[x>\r\n"
        b'Content-Type: text/html\r\n\r\n<a href="http://[x">x</a>\r\n'
    )
    received(inbox, smtp_sandbox, huge, control, bad_charset, nested, unreadable_links)

    listed = admin.get(LIST).content.decode()
    # Newest first; control characters as spaces, encoded words decoded, bytes that are no text as U+FFFD.
    assert subjects(listed) == ["bad links", "deep", "bad charset", " [31mred  Grüße \ufffd\ufffd", "huge"]
    links_page, nested_page, bad_page, control_page, huge_page = (
        admin.get(f"{LIST}{path.name}/") for path in sorted((inbox / "new").iterdir(), reverse=True)
    )
    assert all(page.status_code == 200 for page in (links_page, nested_page, bad_page, control_page, huge_page))
    assert '<code>http://[x</code> <small class="help">(not a web' in links_page.content.decode()
    assert "Grüße" in control_page.content.decode() and "\x1b" not in listed
    assert "x-nonsense" in bad_page.content.decode()
    assert "Only the beginning of this message is shown." in huge_page.content.decode()
    assert max(path.stat().st_size for path in (inbox / "new").iterdir()) <= STORED_BYTES + 100
    assert len(huge) > 3_000_000


@pytest.mark.parametrize("name", ["..", "00000000000000000001.P1Q1.relaydeck", "x"])
def test_only_messages_in_the_inbox_open(inbox, admin, name):
    (inbox / "new").mkdir(parents=True)
    (inbox / "secret").write_text("not a message")  # what `..` names, from new/
    (inbox / "new" / "x").write_text("not a message either")  # in new/, not a message's name

    assert admin.get(f"{LIST}{name}/").status_code == 404
    assert admin.get(f"{LIST}{name}/html/").status_code == 404


def test_viewers_see_the_list_but_not_the_messages(inbox, smtp_sandbox, viewer_client):
    received(inbox, smtp_sandbox, plain("for admins"))
    [name] = [path.name for path in (inbox / "new").iterdir()]

    page = viewer_client.get(LIST).content.decode()

    assert "for admins" in page and f"/sandbox/{name}/" not in page
    assert viewer_client.get(f"{LIST}{name}/").status_code == 403


def test_the_sandbox_server_entry_says_it_delivers_nothing_further(make_server, viewer_client):
    make_server(name="Sandbox", port=2525)
    make_server(name="Elsewhere", port=2526)

    page = viewer_client.get(reverse("smtp_settings:list")).content.decode()

    assert page.count("it delivers nothing further, so mail sent to it never reaches anyone") == 1
    assert f'href="{reverse("sandbox_inbox:list")}"' in page


def test_links_are_read_as_a_browser_reads_them_and_what_is_left_out_is_said(inbox, smtp_sandbox, admin):
    message = EmailMessage()
    message["From"], message["Subject"] = "a@example.test", "many headers"
    for n in range(150):
        message[f"X-Header-{n}"] = "x"
    message.set_content("Hi")
    message.add_alternative(
        '<a href=" https://example.test/a b\t/c\n ">spaced</a>' + ("x" * 99 + "\n") * 2001,
        subtype="html",
    )
    sandbox = smtp_sandbox(inbox=inbox, inbox_keep=10)
    with smtplib.SMTP("127.0.0.1", sandbox.port) as smtp:  # 120 recipients: 100 Delivered-To lines kept
        smtp.sendmail("news@example.test", [f"r{n}@example.test" for n in range(120)], message.as_bytes(policy=SMTP))
    sandbox.stop()
    [name] = [path.name for path in (inbox / "new").iterdir()]

    page = admin.get(f"{LIST}{name}/").content.decode()

    # Spaces at the ends and tabs and line breaks dropped, an inner space kept (encoded in the link).
    assert '<a href="https://example.test/a%20b/c" target="_blank"' in page
    assert ">https://example.test/a b/c</a>" in page
    # The 100 Delivered-To lines do not crowd out the message's own headers; what is left out is said.
    assert page.count('<th scope="row">Delivered-To</th>') == 100
    assert '<th scope="row">Subject</th><td>many headers</td>' in page
    assert "55 more headers not shown." in page  # Return-Path, From, Subject, 150 X-Header-n, 2 of MIME
    assert "Cut here: the HTML part goes on." in page


def test_the_html_part_is_served_as_sent_under_a_policy_of_its_own(inbox, smtp_sandbox, admin, viewer_client):
    received(inbox, smtp_sandbox, campaign_like(), plain("no html"))
    with_html, without = sorted(path.name for path in (inbox / "new").iterdir())

    response = admin.get(f"{LIST}{with_html}/html/")

    # As sent (its styles, its script kept from running by the policy), links to a new tab first.
    assert response.content.decode().startswith('<base target="_blank"><p class="x">Hello "you" <script>')
    policy = response.headers["Content-Security-Policy"]
    assert "sandbox allow-popups allow-popups-to-escape-sandbox" in policy
    assert "default-src 'none'" in policy and "style-src 'unsafe-inline'" in policy and "img-src data:" in policy
    assert "frame-ancestors 'self'" in policy and "allow-scripts" not in policy and "allow-same-origin" not in policy
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert admin.get(f"{LIST}{without}/").headers["X-Frame-Options"] == "DENY"
    assert admin.get(f"{LIST}{without}/html/").status_code == 404
    assert viewer_client.get(f"{LIST}{with_html}/html/").status_code == 403


class Counts(dict):
    def __call__(self, name: str) -> None:
        self[name] = self.get(name, 0) + 1


def test_messages_waiting_to_be_written_are_bounded_in_bytes(inbox, monkeypatch):
    monkeypatch.setattr("smtp_settings.sandbox_inbox.maildir.MAX_WAITING_BYTES", 2500)
    counts = Counts()
    writer = InboxWriter(inbox, keep=10, count=counts)

    for n in range(3):  # the writer not started yet: they all wait
        writer.put("a@example.test", ("b@example.test",), plain(f"message {n}").ljust(1000, b"x"))
    writer.start()
    writer.stop()

    assert counts == {"inbox_left_out": 1, "inbox_written": 2}


def test_a_failed_write_leaves_nothing_half_written_and_the_writer_goes_on(inbox):
    counts = Counts()
    writer = InboxWriter(inbox, keep=10, count=counts)
    (inbox / "tmp").mkdir(parents=True)
    (inbox / "tmp" / "00000000000000000001.P1Q1.relaydeck").write_bytes(b"half written by a killed sandbox")
    writer.put("a@example.test", ("b@example.test",), plain("too big for the disk", "x" * 200_000))
    writer.put("a@example.test", ("b@example.test",), plain("fits"))
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))  # a disk that fills up: writes fail
    try:
        writer.start()
        writer.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)

    assert counts == {"inbox_left_out": 1, "inbox_written": 1}
    assert list((inbox / "tmp").iterdir()) == []
    [written] = (inbox / "new").iterdir()
    assert b"Subject: fits" in written.read_bytes()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert {stat.S_IMODE((inbox / folder).stat().st_mode) for folder in (".", "new", "tmp")} == {0o700}
