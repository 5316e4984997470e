"""A one-time password is good for one thing: setting a new one.

An account flagged `PasswordChangeRequired` (ensure_admin's generated password) is sent from
every page to the password change page until its owner has set a password of their own; logging
out stays open. The flag is read from the database at login and kept in the session. A password
set elsewhere (`ensure_admin` from the environment, the Django admin) drops the flag, and Django
logs out the sessions that knew the old one."""

from django.contrib import messages
from django.contrib.auth import user_logged_in
from django.contrib.auth.views import PasswordChangeView
from django.dispatch import receiver
from django.urls import reverse, reverse_lazy

from project.htmx import HtmxHttpRequest, redirect_to
from project.models import PasswordChangeRequired
from project.roles import Role, role_required

SESSION_KEY = "relaydeck_must_change_password"


@receiver(user_logged_in, dispatch_uid="project.password_change.note_at_login")
def _note_at_login(sender, request, user, **kwargs) -> None:
    if request is not None and PasswordChangeRequired.objects.filter(user_id=user.pk).exists():
        request.session[SESSION_KEY] = True


class PasswordChangeRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HtmxHttpRequest):
        exempt = (reverse("password_change"), reverse("logout"))
        # The user first: a session whose password changed elsewhere is logged out (and emptied) there.
        if request.user.is_authenticated and request.session.get(SESSION_KEY) and request.path_info not in exempt:
            return redirect_to(request, "password_change")
        return self.get_response(request)


class _ChangePassword(PasswordChangeView):
    template_name = "registration/password_change.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form):
        response = super().form_valid(form)  # keeps this session logged in
        PasswordChangeRequired.objects.filter(user_id=self.request.user.pk).delete()
        self.request.session.pop(SESSION_KEY, None)
        messages.success(self.request, "Your password is changed.")
        return response

    def get_context_data(self, **kwargs):
        return super().get_context_data(**kwargs) | {"required": bool(self.request.session.get(SESSION_KEY))}


change_password = role_required(Role.VIEWER)(_ChangePassword.as_view())
