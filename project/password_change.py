"""A one-time password is good for one thing: setting a new one.

An account flagged `PasswordChangeRequired` (ensure_admin's generated password) is sent from
every page that needs a login to the password change page until its owner has set a password of
their own; logging out stays open, and so do the pages open without a login (unsubscribe, the
API, webhooks). The flag is read on each request, and holds only while the account's password
is the one it was made for: a password set anywhere else (`ensure_admin` from the environment,
the Django admin, `changepassword`) ends it, and Django logs out the sessions that knew the old
one. The new password must differ from the one it replaces."""

from django import forms
from django.contrib import messages
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.urls import reverse_lazy

from project.htmx import HtmxHttpRequest, redirect_to
from project.models import PasswordChangeRequired
from project.roles import Role, role_required

EXEMPT = ("password_change", "logout")  # URL names a flagged account may still open
# The session's note that its account had no flag while its password was the one it is now
# (a flag is only ever made with a new password): most requests, polls included, need no query.
UNFLAGGED = "password_change_unflagged"


class PasswordChangeRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HtmxHttpRequest):
        return self.get_response(request)

    def process_view(self, request: HtmxHttpRequest, view_func, view_args, view_kwargs):
        if not (
            getattr(view_func, "login_required", True)  # `login_not_required` views are everyone's
            and request.resolver_match.view_name not in EXEMPT
            and request.user.is_authenticated
        ):
            return None
        password = request.user.get_session_auth_hash()
        if request.session.get(UNFLAGGED) == password:
            return None
        if PasswordChangeRequired.holds_for(request.user):
            return redirect_to(request, "password_change")
        request.session[UNFLAGGED] = password
        return None


def note_unflagged_at_login(sender, request, user, **kwargs) -> None:
    """`user_logged_in`: the login writes the session anyway, so the first page after it needs
    no query of its own either."""
    if request is not None and hasattr(request, "session") and not PasswordChangeRequired.holds_for(user):
        request.session[UNFLAGGED] = user.get_session_auth_hash()


class _NewPasswordForm(PasswordChangeForm):
    def clean(self):
        cleaned = super().clean()
        new = cleaned.get("new_password1")
        if new and self.user.check_password(new):
            self.add_error("new_password1", forms.ValidationError("Choose a password other than the current one."))
        return cleaned


class _ChangePassword(PasswordChangeView):
    template_name = "registration/password_change.html"
    success_url = reverse_lazy("home")
    form_class = _NewPasswordForm

    def form_valid(self, form):
        response = super().form_valid(form)  # keeps this session logged in
        PasswordChangeRequired.objects.filter(user_id=self.request.user.pk).delete()
        messages.success(self.request, "Your password is changed.")
        return response

    def get_context_data(self, **kwargs):
        required = PasswordChangeRequired.holds_for(self.request.user)
        return super().get_context_data(**kwargs) | {"required": required}


change_password = role_required(Role.VIEWER)(_ChangePassword.as_view())
