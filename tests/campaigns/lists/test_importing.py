"""The CSV importer: what imports, what is reported (with its line), and that a re-import changes nothing."""

import io
import re

import pytest
from django.core.files.base import ContentFile

from campaigns.lists import importing
from campaigns.lists.importing import ImportFailed, import_csv_file, run_import
from campaigns.models import MailingList, Subscriber, SubscriberImport
from project import csv_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def news():
    return MailingList.objects.create(name="News")


def _import(content: bytes | str, mailing_list: MailingList, **kwargs):
    data = content.encode() if isinstance(content, str) else content
    return import_csv_file(io.BytesIO(data), mailing_list, **kwargs)


def _reasons(result) -> dict[int, str]:
    return {error["line"]: error["reason"] for error in result.errors}


def test_imports_valid_rows_with_names_attributes_and_membership(news):
    result = _import("email,name,city,plan\nann@example.com,Ann,Oslo,pro\nbob@example.com,,Bergen,\n", news)

    assert (result.rows_read, result.created, result.merged, result.invalid) == (2, 2, 0, 0)
    ann = Subscriber.objects.get(email="ann@example.com")
    assert ann.name == "Ann"
    assert ann.attributes == {"city": "Oslo", "plan": "pro"}
    assert ann.status == Subscriber.Status.ACTIVE
    # A blank cell is no attribute.
    assert Subscriber.objects.get(email="bob@example.com").attributes == {"city": "Bergen"}
    assert set(news.subscribers.values_list("email", flat=True)) == {"ann@example.com", "bob@example.com"}


def test_email_column_alone_is_enough_and_header_case_does_not_matter(news):
    result = _import("Email\r\nann@example.com\r\n", news)
    assert result.created == 1 and Subscriber.objects.get().name == ""


def test_addresses_are_normalised(news):
    _import("email\n  Ann@Example.COM \n", news)
    assert Subscriber.objects.get().email == "ann@example.com"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("bob@,Bob", "'bob@' is not a valid email address"),
        ("not an address,Bob", "'not an address' is not a valid email address"),
        (",Nobody", "no email address"),
        ("carl@example.com", "has 1 columns, the header has 2"),
        ("carl@example.com,Carl,extra", "has 3 columns, the header has 2"),
        ("carl@example.com,Ca\x00rl", "contains a NUL character"),
        (f"{'x' * 250}@example.com,Long", "is longer than 254 characters"),
        (f"carl@example.com,{'n' * 201}", "the name is longer than 200 characters"),
        ("carl@example.com,Carl\u2028Bcc: x@evil.test", "the name contains a line break or control character (U+2028)"),
        ('carl@example.com,"Carl\nBcc: x@evil.test"', "the name contains a line break or control character (U+000A)"),
        ("carl@example.com,Carl\x07", "the name contains a line break or control character (U+0007)"),
        ("carl@exam\u2028ple.com,Carl", "the address contains a line break or control character (U+2028)"),
    ],
)
def test_an_invalid_row_is_reported_with_its_line_and_the_others_import(news, row, reason):
    result = _import(f"email,name\nann@example.com,Ann\n{row}\ndora@example.com,Dora\n", news)

    assert result.invalid == 1 and result.created == 2
    assert len(result.errors) == 1 and result.errors[0]["line"] == 3
    assert reason in result.errors[0]["reason"]
    assert set(Subscriber.objects.values_list("email", flat=True)) == {"ann@example.com", "dora@example.com"}


def test_a_line_that_is_not_utf8_is_skipped_and_reported(news):
    content = b"email,name\nann@example.com,Ann\n" + "bj\u00f8rn@example.com,Bj\u00f8rn\n".encode("latin-1")
    content += b"carl@example.com,Carl\n"

    result = _import(content, news)

    assert _reasons(result) == {3: "not UTF-8 text"}
    assert (result.rows_read, result.created, result.invalid) == (3, 2, 1)


def test_utf8_with_a_byte_order_mark_imports(news):
    result = _import("\ufeffemail,name\nbjorn@example.com,Bj\u00f8rn\n".encode(), news)
    assert result.created == 1 and Subscriber.objects.get().name == "Bj\u00f8rn"


def test_quoted_fields_may_span_lines_and_errors_give_the_physical_line(news):
    content = 'email,name,note\nann@example.com,Ann,"two\nlines"\nbob@,Bob,x\n"carl@example.com","Carl","a, b"\n'

    result = _import(content, news)

    assert _reasons(result) == {4: "'bob@' is not a valid email address"}
    assert Subscriber.objects.get(email="ann@example.com").attributes == {"note": "two\nlines"}
    assert Subscriber.objects.get(email="carl@example.com").attributes == {"note": "a, b"}


def test_blank_lines_are_not_rows(news):
    result = _import("\nemail\n\nann@example.com\n,\n\nbob@\n", news)
    assert result.rows_read == 2 and _reasons(result) == {7: "'bob@' is not a valid email address"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (b"name,city\nAnn,Oslo\n", "the header row has no 'email' column (found: 'name', 'city')"),
        (b"email,Email\na@example.com,b@example.com\n", "names the column 'email' more than once"),
        (b"\xffemail\nann@example.com\n", "line 1: not UTF-8 text, in the header row"),
        (b"email,ci\x00ty\nann@example.com,Oslo\n", "the header row contains a NUL character"),
    ],
)
def test_an_unusable_header_fails_the_whole_import_and_saves_nothing(news, content, reason):
    with pytest.raises(ImportFailed, match=re.escape(reason)):
        _import(content, news)
    assert not Subscriber.objects.exists()


def test_duplicates_in_the_file_merge_into_one_subscriber(news):
    content = "email,name,city,plan\nann@example.com,Ann,Oslo,\nANN@example.com,,Bergen,pro\n"

    result = _import(content, news)

    assert (result.created, result.merged, result.invalid) == (1, 1, 0)
    ann = Subscriber.objects.get()
    assert ann.name == "Ann"
    assert ann.attributes == {"city": "Bergen", "plan": "pro"}


def test_duplicates_across_chunks_merge_too(news, monkeypatch):
    monkeypatch.setattr(importing, "CHUNK_ROWS", 2)
    content = "email,name\na@example.com,A\nb@example.com,B\na@example.com,A2\nc@example.com,C\n"

    result = _import(content, news)

    assert (result.created, result.merged) == (3, 1)
    assert Subscriber.objects.get(email="a@example.com").name == "A2"


def test_a_reimport_changes_nothing_and_counts_every_row_as_merged(news):
    content = "email,name,city\nann@example.com,Ann,Oslo\nbob@example.com,Bob,\nbad,X,Y\n"
    _import(content, news)
    before = list(Subscriber.objects.values_list("email", "name", "attributes", "status"))

    again = _import(content, news)

    assert (again.created, again.merged, again.invalid) == (0, 2, 1)
    assert list(Subscriber.objects.values_list("email", "name", "attributes", "status")) == before
    assert news.subscribers.count() == 2


def test_merging_updates_name_and_attributes_but_never_status(news):
    gone = Subscriber.objects.create(
        email="gone@example.com", name="Old", attributes={"city": "Oslo", "plan": "free"}, status="unsubscribed"
    )

    result = _import("email,name,plan\nGone@example.com,New,pro\n", news)

    gone.refresh_from_db()
    assert result.merged == 1
    assert gone.status == Subscriber.Status.UNSUBSCRIBED
    assert (gone.name, gone.attributes) == ("New", {"city": "Oslo", "plan": "pro"})
    assert news.subscribers.get() == gone


def test_a_blank_name_keeps_the_stored_one(news):
    Subscriber.objects.create(email="ann@example.com", name="Ann")
    _import("email,name\nann@example.com,\n", news)
    assert Subscriber.objects.get().name == "Ann"


def test_importing_into_a_second_list_adds_membership(news):
    other = MailingList.objects.create(name="Offers")
    _import("email\nann@example.com\n", news)
    _import("email\nann@example.com\n", other)
    assert set(Subscriber.objects.get().lists.all()) == {news, other}


def test_a_chunk_that_loses_a_race_for_an_address_is_retried_and_merges(news, monkeypatch):
    real_bulk_create = Subscriber.objects.bulk_create
    calls = []

    def bulk_create_after_a_rival(objs, *args, **kwargs):
        calls.append(len(objs))
        if len(calls) == 1:  # another import inserts the address between our read and our insert
            real_bulk_create([Subscriber(email="ann@example.com", name="Rival")])
        return real_bulk_create(objs, *args, **kwargs)

    monkeypatch.setattr(Subscriber.objects, "bulk_create", bulk_create_after_a_rival)

    result = _import("email,name\nann@example.com,Ann\n", news)

    assert len(calls) == 2 and result.invalid == 0 and result.created + result.merged == 1
    assert news.subscribers.get().name == "Ann"


def test_only_the_first_errors_are_kept_but_all_are_counted(news, monkeypatch):
    monkeypatch.setattr(importing, "MAX_ERRORS", 3)
    result = _import("email\n" + "bad\n" * 5 + "ann@example.com\n", news)
    assert result.invalid == 5 and [e["line"] for e in result.errors] == [2, 3, 4]
    assert result.created == 1


def test_progress_is_reported_after_each_chunk(news, monkeypatch):
    monkeypatch.setattr(importing, "CHUNK_ROWS", 2)
    content = "email\n" + "".join(f"user{i}@example.com\n" for i in range(5))
    seen = []

    result = _import(content, news, progress=lambda r: seen.append((r.rows_read, r.created, r.bytes_read)))

    assert [(rows, created) for rows, created, _ in seen] == [(2, 2), (4, 4), (5, 5)]
    assert seen[-1][2] == len(content) == result.bytes_read


def test_an_overlong_line_is_reported_without_being_read_into_memory(news, monkeypatch):
    monkeypatch.setattr(csv_files, "MAX_LINE_BYTES", 64)
    content = "email,note\nann@example.com," + "x" * 200 + "\nbob@example.com,short\n"

    result = _import(content, news)

    assert [e["line"] for e in result.errors] == [2]
    assert "longer than" in result.errors[0]["reason"]
    assert list(Subscriber.objects.values_list("email", flat=True)) == ["bob@example.com"]


def _queued_import(mailing_list: MailingList, content: bytes, settings, tmp_path) -> SubscriberImport:
    settings.MEDIA_ROOT = tmp_path
    return SubscriberImport.objects.create(
        mailing_list=mailing_list,
        file=ContentFile(content, name="people.csv"),
        original_name="people.csv",
        size_bytes=len(content),
    )


def test_run_import_records_progress_and_result_and_deletes_the_file(news, settings, tmp_path):
    content = b"email,name\nann@example.com,Ann\nbob@,Bob\n"
    job = _queued_import(news, content, settings, tmp_path)
    stored = tmp_path / job.file.name
    assert stored.exists()

    run_import(job.pk)

    job.refresh_from_db()
    assert job.status == SubscriberImport.Status.DONE
    assert (job.rows_read, job.created, job.merged, job.invalid) == (2, 1, 0, 1)
    assert job.bytes_read == len(content)
    assert job.errors == [{"line": 3, "reason": "'bob@' is not a valid email address"}]
    assert job.finished_at is not None and job.failure == ""
    assert not stored.exists() and job.file.name == ""


def test_run_import_fails_with_a_reason_when_the_header_is_unusable(news, settings, tmp_path):
    job = _queued_import(news, b"name\nAnn\n", settings, tmp_path)

    run_import(job.pk)

    job.refresh_from_db()
    assert job.status == SubscriberImport.Status.FAILED
    assert "no 'email' column" in job.failure
    assert not Subscriber.objects.exists()
    assert not list((tmp_path / "imports").iterdir())


def test_run_import_runs_an_import_once(news, settings, tmp_path):
    job = _queued_import(news, b"email\nann@example.com\n", settings, tmp_path)
    run_import(job.pk)
    finished_at = SubscriberImport.objects.get(pk=job.pk).finished_at

    run_import(job.pk)  # the queue delivering the task twice

    job.refresh_from_db()
    assert job.finished_at == finished_at and job.created == 1


def test_run_import_reports_a_missing_file(news, settings, tmp_path):
    job = _queued_import(news, b"email\nann@example.com\n", settings, tmp_path)
    (tmp_path / job.file.name).unlink()

    run_import(job.pk)

    job.refresh_from_db()
    assert job.status == SubscriberImport.Status.FAILED and job.failure == "The uploaded file is gone."
