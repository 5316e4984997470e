from django.contrib import admin

from smtp_settings.forms import SmtpServerForm
from smtp_settings.models import SmtpServer


@admin.register(SmtpServer)
class SmtpServerAdmin(admin.ModelAdmin):
    form = SmtpServerForm  # its password field is write-only, as on the settings page
    list_display = ["name", "host", "port", "tls", "enabled", "max_conns", "max_msgs_per_conn"]
    list_filter = ["enabled", "tls"]
    search_fields = ["name", "host"]
    readonly_fields = ["learned_msgs_per_conn", "learned_msgs_per_conn_at", "learned_max_conns", "learned_max_conns_at"]
