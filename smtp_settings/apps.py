from django.apps import AppConfig


class SmtpSettingsConfig(AppConfig):
    name = "smtp_settings"
    verbose_name = "SMTP settings"
