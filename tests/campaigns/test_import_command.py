"""`manage.py import_subscribers --list NAME FILE.csv`: a summary, each bad line, and exit codes."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import MailingList, Subscriber

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _csv(tmp_path, text: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(*args) -> str:
    out = StringIO()
    call_command("import_subscribers", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_imports_into_a_new_list_and_lists_each_invalid_row(tmp_path):
    path = _csv(tmp_path, "email,name\nann@example.com,Ann\nbob@example.com,Bob\nbob@\n\n,Nobody\n")

    output = _run("--list", "News", str(path))

    assert "Created the list 'News'." in output
    assert f"{path}: 4 rows into 'News': 2 new, 0 merged, 2 invalid." in output
    assert "line 4: has 1 columns, the header has 2" in output
    assert "line 6: no email address" in output
    assert set(MailingList.objects.get(name="News").subscribers.values_list("email", flat=True)) == {
        "ann@example.com",
        "bob@example.com",
    }


def test_a_second_run_merges_into_the_existing_list(tmp_path):
    path = _csv(tmp_path, "email,name\nann@example.com,Ann\n")
    _run("--list", "News", str(path))

    output = _run("--list", "News", str(path))

    assert "Created" not in output
    assert "1 rows into 'News': 0 new, 1 merged, 0 invalid." in output
    assert Subscriber.objects.count() == 1 and MailingList.objects.count() == 1


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CommandError, match=r"cannot read .*nope\.csv: No such file or directory"):
        _run("--list", "News", str(tmp_path / "nope.csv"))
    assert not MailingList.objects.exists()


def test_a_file_without_an_email_column_is_an_error_and_creates_no_list(tmp_path):
    path = _csv(tmp_path, "name,city\nAnn,Oslo\n")
    with pytest.raises(CommandError, match="no 'email' column"):
        _run("--list", "News", str(path))
    assert not MailingList.objects.exists()


def test_a_blank_list_name_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="--list must be a name"):
        _run("--list", " ", str(_csv(tmp_path, "email\n")))


def test_a_file_larger_than_the_limit_is_refused_before_anything_is_saved(tmp_path, settings):
    settings.IMPORT_MAX_BYTES = 20
    path = _csv(tmp_path, "email\nann@example.com\n")  # 22 bytes

    with pytest.raises(CommandError) as refused:
        _run("--list", "News", str(path))

    assert refused.value.returncode == 2
    assert (
        str(refused.value)
        == f"{path} is too large: it has 22 bytes, and an import may have at most 20 (IMPORT_MAX_BYTES)"
    )
    assert not MailingList.objects.exists() and not Subscriber.objects.exists()


def _manage(*args, var_dir: Path, **environ: str) -> subprocess.CompletedProcess:
    env = os.environ | {"RELAYDECK_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "project.settings"} | environ
    for name in ("DATABASE_URL", "SQLITE_PATH"):  # a throwaway SQLite database of its own
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def test_exit_codes_from_the_shell(tmp_path):
    var_dir = tmp_path / "var"
    assert _manage("migrate", "--verbosity", "0", var_dir=var_dir).returncode == 0
    good = _csv(tmp_path, "email\nann@example.com\nbob@\n")
    bad = _csv(tmp_path, "name\nAnn\n", name="bad.csv")

    imported = _manage("import_subscribers", "--list", "News", str(good), var_dir=var_dir)
    failed = _manage("import_subscribers", "--list", "News", str(bad), var_dir=var_dir)

    assert imported.returncode == 0, imported.stderr
    assert "line 3: 'bob@' is not a valid email address" in imported.stdout
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"CommandError: {bad}: the header row has no 'email' column (found: 'name')"

    too_large = _manage("import_subscribers", "--list", "News", str(good), var_dir=var_dir, IMPORT_MAX_BYTES="10")
    assert too_large.returncode == 2
    assert too_large.stderr.strip() == (
        f"CommandError: {good} is too large: it has 27 bytes, and an import may have at most 10 (IMPORT_MAX_BYTES)"
    )
