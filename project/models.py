from django.conf import settings
from django.db import models


class PasswordChangeRequiredQuerySet(models.QuerySet):
    def in_force(self) -> "PasswordChangeRequiredQuerySet":
        """The flags whose password is still the account's: a password set since, anywhere
        (the password page, the Django admin, `changepassword`, `set_role`, `ensure_admin`),
        leaves its flag without force."""
        return self.filter(password=models.F("user__password"))


class PasswordChangeRequired(models.Model):
    """The account logs in with a password someone else saw (the one-time password
    `ensure_admin` printed): until its owner sets a new one, every page sends them to the
    password change page (project/password_change.py). The flag holds that password's hash,
    and holds only while the account's password is still that one."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    password = models.CharField(max_length=128, help_text="The hash of the password that must be replaced.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PasswordChangeRequiredQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.user} must change their password"

    @classmethod
    def holds_for(cls, user) -> bool:
        return cls.objects.filter(user_id=user.pk, password=user.password).exists()
