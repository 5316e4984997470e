import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Make sure an admin account exists: from DJANGO_SUPERUSER_USERNAME/DJANGO_SUPERUSER_PASSWORD, "
        "or, on a fresh database, an 'admin' account with a printed one-time password."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if username and password:
            user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True})
            if created:
                user.is_superuser = True
                user.set_password(password)
                user.save()
                self.stdout.write(f"Created admin account {username!r}.")
            return
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", password=password)
        self.stdout.write(
            self.style.WARNING(
                f"Created admin account 'admin' with one-time password: {password}\n"
                "Log in and change it (Django admin → Users), or set DJANGO_SUPERUSER_USERNAME/PASSWORD."
            )
        )
