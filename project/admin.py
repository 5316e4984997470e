from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class RoleUserAdmin(UserAdmin):
    """Users with their groups in the list: a role is a group (project/roles.py); superusers are admins."""

    list_display = [*UserAdmin.list_display, "is_superuser", "group_names"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="Groups (roles)")
    def group_names(self, user) -> str:
        return ", ".join(group.name for group in user.groups.all()) or "—"
