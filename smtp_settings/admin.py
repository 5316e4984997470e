from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect

from smtp_settings.deletion import ServerInUse, users_of
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

    # A campaign launched after that check is still seen by the delete itself, which raises
    # ServerInUse: the deletion and its log entry roll back, and the admin says why.

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)  # atomic itself
        except ServerInUse as refused:
            return self._refused(request, refused)

    def response_action(self, request, queryset):
        try:
            with transaction.atomic():
                return super().response_action(request, queryset)
        except ServerInUse as refused:
            return self._refused(request, refused)

    def _refused(self, request, refused: ServerInUse) -> HttpResponseRedirect:
        self.message_user(request, str(refused), messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())
