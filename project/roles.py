"""Who may do what. Every view of the dashboard wears `@role_required(...)`; this is the one
place that decides.

- viewer: reads every page (campaigns, their progress and logs, lists, SMTP servers without
  their secrets) and exports the log;
- sender: also writes lists and campaigns: import, edit, launch, pause, resume, cancel, retry,
  send tests, delete; requeues and deletes outbox messages; and adds, imports and removes
  addresses on the suppression list;
- admin: also SMTP servers (and their "Test connection"), relay logins, API tokens and the
  default route and, in the Django admin, users.

Each role includes the ones before it. A role is a Django group of the same name, with at least
the model permissions of ROLE_PERMISSIONS (which the Django admin goes by); superusers are
admins. An active user in none of these groups sees only a page that says so. Give roles with
`manage.py set_role` or in the Django admin (a user's Groups).
"""

import enum
from collections.abc import Callable
from functools import wraps

from django.apps import apps as installed_apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class Role(enum.StrEnum):
    VIEWER = "viewer"
    SENDER = "sender"
    ADMIN = "admin"

    def includes(self, other: "Role") -> bool:
        order = list(Role)
        return order.index(self) >= order.index(other)


VIEW = ["view"]
ALL = ["add", "change", "delete", "view"]
# role: {app label: actions on every model of that app}
ROLE_PERMISSIONS = {
    Role.VIEWER: {"campaigns": VIEW, "smtp_settings": VIEW},
    Role.SENDER: {"campaigns": ALL, "smtp_settings": VIEW},
    Role.ADMIN: {"campaigns": ALL, "smtp_settings": ALL, "auth": ALL, "axes": ALL},
}


def sync_role_groups(apps, using: str) -> None:
    """Make each role's group and give it at least its permissions. Runs after every migrate
    and flush (post_migrate, `project/apps.py`), as Django makes permissions: a fresh database
    gets the groups, a flushed one (as tests do) gets them back, a new model's permissions join."""
    for label in {label for grants in ROLE_PERMISSIONS.values() for label in grants}:
        # Django makes an app's permissions after migrating it; make them now, whatever the order.
        create_permissions(installed_apps.get_app_config(label), verbosity=0, using=using, apps=apps)
    Group = apps.get_model("auth", "Group")
    permissions = apps.get_model("auth", "Permission").objects.using(using).select_related("content_type")
    for role, grants in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        actions = {label: set(names) for label, names in grants.items()}
        wanted = permissions.filter(content_type__app_label__in=grants)
        group.permissions.add(*(p for p in wanted if p.codename.split("_", 1)[0] in actions[p.content_type.app_label]))


def role_of(user) -> Role | None:
    """The user's highest role, or None. Kept on the user object for the rest of the request."""
    if not (user.is_authenticated and user.is_active):
        return None
    if not hasattr(user, "_role"):
        if user.is_superuser:
            user._role = Role.ADMIN
        else:
            names = set(user.groups.filter(name__in=list(Role)).values_list("name", flat=True))
            user._role = next((role for role in reversed(Role) if role in names), None)
    return user._role


def assign_role(user, role: Role | None) -> None:
    """Make `role` the user's only role; None takes every role away. An admin gets the Django
    admin (staff); anyone else loses staff and superuser rights, which would make them an admin."""
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name__in=list(Role)))
        if role is not None:
            user.groups.add(Group.objects.get(name=role))
        user.is_staff = role == Role.ADMIN
        user.is_superuser = user.is_superuser and role == Role.ADMIN
        user.save(update_fields=["is_staff", "is_superuser"])
    user.__dict__.pop("_role", None)


def _refusal(request: HttpRequest, needed: Role) -> HttpResponse | None:
    """The 403 page for a user whose role is below `needed` (or who has none); None if allowed."""
    role = role_of(request.user)
    if role is not None and role.includes(needed):
        return None
    template = "roles/no_role.html" if role is None else "roles/forbidden.html"
    return render(request, template, {"needed": needed}, status=403)


def role_required(needed: Role) -> Callable:
    """Let users with at least the `needed` role through; answer anyone else with a 403 page."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            return _refusal(request, needed) or view(request, *args, **kwargs)

        checked.required_role = needed  # tests/test_roles.py checks every URL has one
        return checked

    return decorator


def context(request: HttpRequest) -> dict:
    """What templates need to show only the buttons the user may press. A request refused
    before AuthenticationMiddleware ran (a forged Host header's 400) has no user: no role."""
    user = getattr(request, "user", None)
    role = role_of(user) if user is not None else None
    return {
        "role": role,
        "can_send": role is not None and role.includes(Role.SENDER),
        "can_administer": role == Role.ADMIN,
    }
