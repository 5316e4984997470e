from django.apps import AppConfig


class SmtpSettingsConfig(AppConfig):
    name = "smtp_settings"
    verbose_name = "SMTP settings"

    def ready(self):
        from smtp_settings import shared_limits  # noqa: F401 (connects its signal receivers)
