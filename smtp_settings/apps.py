from django.apps import AppConfig


class SmtpSettingsConfig(AppConfig):
    name = "smtp_settings"
    verbose_name = "SMTP settings"

    def ready(self):
        from django_q.signals import post_spawn

        from smtp_settings import shared_limits  # noqa: F401 (connects its signal receivers)
        from smtp_settings.outbox import delivery
        from smtp_settings.webhooks import tracking  # noqa: F401 (connects its receiver of anymail's events)

        # A worker that starts (after a crash, say) recovers a dead sender's messages and
        # wakes a sender at once, rather than at the next scheduled watchdog run.
        post_spawn.connect(lambda **kwargs: delivery.watchdog(), weak=False, dispatch_uid="smtp_settings.outbox")
