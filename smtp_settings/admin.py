from django.contrib import admin

from smtp_settings.deletion import users_of
from smtp_settings.forms import SmtpServerForm
from smtp_settings.models import SmtpServer


@admin.register(SmtpServer)
class SmtpServerAdmin(admin.ModelAdmin):
    form = SmtpServerForm  # its password field is write-only, as on the settings page
    list_display = ["name", "host", "port", "tls", "enabled", "max_conns", "max_msgs_per_conn"]
    list_filter = ["enabled", "tls"]
    search_fields = ["name", "host"]
    readonly_fields = ["learned_msgs_per_conn", "learned_msgs_per_conn_at", "learned_max_conns", "learned_max_conns_at"]

    def get_deleted_objects(self, objs, request):
        """A server that a campaign under way uses is protected, as on the settings page
        (smtp_settings/deletion.py): the admin names what holds it and deletes nothing."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for server in objs:
            protected += [f"{user.kind} “{user.name}” ({user.state})" for user in users_of(server) if user.busy]
        return deleted, counts, perms_needed, protected
