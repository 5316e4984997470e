from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from campaigns import bounces, esp_reports, eventlog, servers  # noqa: F401  (they connect their receivers)
        from campaigns.sending import loop, watchdog  # noqa: F401  (their receivers)

        # A worker that starts (after a crash, say) takes over stalled campaigns at once
        # rather than at the next scheduled watchdog run.
        post_spawn.connect(lambda **kwargs: watchdog.watchdog(), weak=False, dispatch_uid="campaigns.watchdog")
