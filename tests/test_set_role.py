"""`manage.py set_role USERNAME admin|sender|viewer|none`."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from project.roles import Role, role_of

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def _fresh(user):
    return type(user).objects.get(pk=user.pk)


@pytest.fixture
def dana(django_user_model):
    return django_user_model.objects.create_user("dana", password="pw")


@pytest.mark.parametrize("role", list(Role))
def test_gives_the_role(dana, role, capsys):
    call_command("set_role", "dana", role)
    assert role_of(_fresh(dana)) == role
    assert capsys.readouterr().out == f"dana is now {role}.\n"


def test_a_new_role_replaces_the_old_one_and_none_takes_it_away(dana):
    call_command("set_role", "dana", "admin")
    assert _fresh(dana).is_staff  # admins give roles in the Django admin
    call_command("set_role", "dana", "viewer")
    assert [group.name for group in _fresh(dana).groups.all()] == ["viewer"]
    assert not _fresh(dana).is_staff
    call_command("set_role", "dana", "none")
    assert role_of(_fresh(dana)) is None and not _fresh(dana).groups.exists()


def test_a_superuser_given_a_lesser_role_stops_being_an_admin(django_user_model):
    django_user_model.objects.create_superuser("root", password="pw")
    call_command("set_role", "root", "sender")
    root = django_user_model.objects.get(username="root")
    assert role_of(root) == Role.SENDER and not root.is_superuser


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["nobody", "viewer"], "No user named 'nobody'."),
        (["dana", "owner"], "Unknown role 'owner': choose one of viewer, sender, admin, none."),
    ],
)
def test_a_bad_user_or_role_is_exit_code_2_and_one_line(dana, args, why):
    with pytest.raises(CommandError, match=why) as raised:
        call_command("set_role", *args)
    assert raised.value.returncode == 2
    assert role_of(_fresh(dana)) is None


def test_from_the_shell_a_bad_role_exits_2_with_one_line_of_why():
    done = subprocess.run(
        [sys.executable, "manage.py", "set_role", "dana", "owner"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "CommandError: Unknown role 'owner': choose one of viewer, sender, admin, none."
    ]
