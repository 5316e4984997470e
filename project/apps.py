from django.apps import AppConfig
from django.apps import apps as installed_apps
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_migrate


class ProjectConfig(AppConfig):
    name = "project"

    def ready(self):
        from project.password_change import note_unflagged_at_login
        from project.roles import sync_role_groups

        def sync_roles(sender, using, apps=installed_apps, **kwargs):  # flush sends no `apps`
            sync_role_groups(apps, using)

        # After every migrate, and after a flush (which empties what the migration made): auth's,
        # as the groups and permissions are auth's.
        auth = installed_apps.get_app_config("auth")
        post_migrate.connect(sync_roles, sender=auth, weak=False, dispatch_uid="project.sync_role_groups")
        user_logged_in.connect(note_unflagged_at_login, dispatch_uid="project.note_unflagged_at_login")
