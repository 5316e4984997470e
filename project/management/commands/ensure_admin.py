import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from project.models import PasswordChangeRequired

GENERATED_USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Make sure an admin account exists, and say in one line what was done. With "
        "DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD set, that account (created, or "
        "updated) is an admin with that password. Without them, a database with no admin gets an "
        "'admin' account with a printed one-time password, which must be changed at the first login."
    )

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if bool(username) != bool(password):
            raise CommandError("Set both DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD, or neither.")
        with transaction.atomic():
            line = self._from_environment(username, password) if username else self._one_time()
        self.stdout.write(line)

    def _from_environment(self, username: str, password: str) -> str:
        User = get_user_model()
        user, created = User.objects.select_for_update().get_or_create(username=username)
        unchanged = not created and user.check_password(password)
        if not unchanged:
            user.set_password(password)
        was_admin = user.is_superuser and user.is_staff and user.is_active
        user.is_superuser = user.is_staff = user.is_active = True
        user.save()
        # The operator chose this password: nothing to change at the next login.
        PasswordChangeRequired.objects.filter(user=user).delete()
        if created:
            return f"Created the admin account {username!r} with the password in DJANGO_SUPERUSER_PASSWORD."
        what = "kept its password" if unchanged else "set its password"
        made = "" if was_admin else ", made it an active admin"
        return f"Admin account {username!r} exists: {what} from DJANGO_SUPERUSER_PASSWORD{made}."

    def _one_time(self) -> str:
        User = get_user_model()
        admins = User.objects.filter(is_superuser=True)
        if admins.exists():
            waiting = PasswordChangeRequired.objects.filter(user__in=admins).values_list("user__username", flat=True)
            note = f"; {', '.join(map(repr, waiting))} must still replace a one-time password" if waiting else ""
            return (
                f"Nothing changed: there are admin accounts{note}. "
                "Set DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD to set one's password."
            )
        if User.objects.filter(username=GENERATED_USERNAME).exists():
            raise CommandError(
                f"No admin account, and {GENERATED_USERNAME!r} is taken by an account that is not one: "
                "set DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD."
            )
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(GENERATED_USERNAME, password=password)
        PasswordChangeRequired.objects.create(user=user)
        return self.style.WARNING(
            f"Created the admin account {GENERATED_USERNAME!r} with the one-time password {password} "
            "(log in with it and choose your own; or set DJANGO_SUPERUSER_USERNAME/PASSWORD)."
        )
