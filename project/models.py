from django.conf import settings
from django.db import models


class PasswordChangeRequired(models.Model):
    """The account logs in with a password someone else saw (the one-time password
    `ensure_admin` printed): until its owner sets a new one, every page sends them to the
    password change page (project/password_change.py)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} must change their password"
