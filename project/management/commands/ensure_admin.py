import secrets

from axes.utils import reset as reset_lockout
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from project.models import PasswordChangeRequired
from project.settings import env_str

GENERATED_USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Make sure an admin account exists, and say in one line what was done. With "
        "DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD (or DJANGO_SUPERUSER_PASSWORD_FILE) "
        "set, that account (created, or updated) is an active admin with that password, and any "
        "one-time password still waiting to be replaced stops working. Without them, a database "
        "with no active admin gets an 'admin' account with a printed one-time password, which must "
        "be changed at the first login."
    )

    def handle(self, *args, **options):
        username = env_str("DJANGO_SUPERUSER_USERNAME")
        try:
            password = env_str("DJANGO_SUPERUSER_PASSWORD")
        except OSError as error:
            raise CommandError(f"DJANGO_SUPERUSER_PASSWORD_FILE cannot be read: {error.strerror}.") from None
        if bool(username) != bool(password):
            raise CommandError(
                "Set both DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD (or its _FILE), or neither."
            )
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
        # The operator chose this password: it may log in, however often it failed before.
        reset_lockout(username=username)
        # Other accounts' one-time passwords were printed, in logs kept who knows where: now that
        # the operator has an admin of their own, they stop working.
        closed = sorted(self._close_one_time_passwords(excluding=user))
        PasswordChangeRequired.objects.filter(user=user).delete()
        closed_note = f"; the one-time password of {', '.join(map(repr, closed))} no longer works" if closed else ""
        if created:
            return (
                f"Created the admin account {username!r} with the password in DJANGO_SUPERUSER_PASSWORD{closed_note}."
            )
        what = "kept its password" if unchanged else "set its password"
        made = "" if was_admin else ", made it an active admin"
        return f"Admin account {username!r} exists: {what} from DJANGO_SUPERUSER_PASSWORD{made}{closed_note}."

    def _close_one_time_passwords(self, excluding) -> list[str]:
        flags = PasswordChangeRequired.objects.in_force().exclude(user=excluding).select_related("user")
        closed = list(flags)
        for flag in closed:
            flag.user.set_unusable_password()
            flag.user.save(update_fields=["password"])
        PasswordChangeRequired.objects.filter(pk__in=[flag.pk for flag in closed]).delete()
        return [flag.user.get_username() for flag in closed]

    def _one_time(self) -> str:
        User = get_user_model()
        admins = User.objects.filter(is_superuser=True, is_active=True)  # an inactive one cannot log in
        if admins.exists():
            waiting = PasswordChangeRequired.objects.in_force().filter(user__in=admins)
            names = waiting.values_list("user__username", flat=True)
            note = f"; {', '.join(map(repr, names))} must still replace a one-time password" if names else ""
            return (
                f"Nothing changed: there are active admin accounts{note}. "
                "Set DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD to set one's password."
            )
        if User.objects.filter(username=GENERATED_USERNAME).exists():
            raise CommandError(
                f"No active admin account, and {GENERATED_USERNAME!r} is taken by an account that is not "
                "an active admin: set DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD."
            )
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(GENERATED_USERNAME, password=password)
        PasswordChangeRequired.objects.create(user=user, password=user.password)
        return self.style.WARNING(
            f"Created the admin account {GENERATED_USERNAME!r} with the one-time password {password} "
            "(log in with it and choose your own; or set DJANGO_SUPERUSER_USERNAME/PASSWORD)."
        )
