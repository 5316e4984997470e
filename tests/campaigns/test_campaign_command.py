"""`manage.py campaign …`: exit 0 with the answer, or non-zero with one line of why."""

import json

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Campaign, MailingList
from campaigns.sending import loop
from tests.campaigns.test_sending import make_campaign


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("campaign", *args, stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def html_file(tmp_path):
    path = tmp_path / "body.html"
    path.write_text("<p>Hello {{ subscriber.name }}</p>")
    return path


def test_create_prints_the_new_id(make_server, html_file):
    make_server(name="ses")
    MailingList.objects.create(name="readers")

    new_id = run(
        "create", "--name", "N", "--subject", "S", "--from-email", "f@example.test", "--list", "readers",
        "--server", "ses", "--html-file", str(html_file),
    )  # fmt: skip

    campaign = Campaign.objects.get(pk=int(new_id))
    assert (campaign.name, campaign.status, campaign.html_body) == ("N", "draft", html_file.read_text())
    assert [s.name for s in campaign.servers.all()] == ["ses"]
    assert campaign.rate_limit is None  # the servers' limits only


def test_create_takes_a_rate_limit(make_server, html_file):
    make_server(name="ses")
    MailingList.objects.create(name="readers")

    new_id = run(
        "create", "--name", "N", "--subject", "S", "--from-email", "f@example.test", "--list", "readers",
        "--server", "ses", "--html-file", str(html_file), "--rate-limit", "12.5",
    )  # fmt: skip

    assert Campaign.objects.get(pk=int(new_id)).rate_limit == 12.5


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"--list": "nope"}, "no list named 'nope'"),
        ({"--server": "nope"}, "no SMTP server named 'nope'"),
        ({"--from-email": "not an address"}, "from_email"),
        ({"--subject": "{% if %}"}, "subject"),
        ({"--html-file": "/nonexistent.html"}, "cannot read /nonexistent.html"),
    ],
)
def test_create_refuses_bad_input_with_one_line(make_server, html_file, change, reason):
    make_server(name="ses")
    MailingList.objects.create(name="readers")
    options = {"--name": "N", "--subject": "S", "--from-email": "f@example.test", "--list": "readers",
               "--server": "ses", "--html-file": str(html_file)} | change  # fmt: skip
    with pytest.raises(CommandError, match=reason):
        run("create", *[part for pair in options.items() for part in pair])
    assert not Campaign.objects.exists()


def test_launch_pause_resume_cancel_and_status(make_server):
    campaign = make_campaign([make_server()], 2)

    assert run("launch", str(campaign.pk)) == f"campaign {campaign.pk} is running"
    with pytest.raises(CommandError, match="is running: cannot launch"):
        run("launch", str(campaign.pk))
    assert run("pause", str(campaign.pk)) == f"campaign {campaign.pk} is paused"
    assert run("resume", str(campaign.pk)) == f"campaign {campaign.pk} is running"
    status = json.loads(run("status", str(campaign.pk), "--json"))
    assert status == {
        "id": campaign.pk, "status": "running", "total": 0, "sent": 0, "failed": 0, "deferred": 0,
        "pending": 0, "skipped": 0, "cancelled": 0, "ambiguous": 0,
    }  # fmt: skip
    loop.populate(campaign)
    assert run("cancel", str(campaign.pk)) == f"campaign {campaign.pk} is cancelled"
    status = json.loads(run("status", str(campaign.pk), "--json"))
    assert (status["status"], status["pending"], status["skipped"], status["cancelled"]) == ("cancelled", 0, 0, 2)


def test_unknown_campaign(db):
    with pytest.raises(CommandError, match="no campaign with id 42"):
        run("status", "42")


def test_the_command_exits_non_zero_with_one_line(db):
    import subprocess
    import sys

    from tests.conftest import ROOT, _worker_env

    result = subprocess.run(
        [sys.executable, "manage.py", "campaign", "launch", "42"], cwd=ROOT, env=_worker_env(), capture_output=True
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "CommandError: no campaign with id 42"
