from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from campaigns import eventlog, sending  # noqa: F401  (they connect their smtp_event receivers)

        # A worker that starts (after a crash, say) takes over stalled campaigns at once
        # rather than at the next scheduled watchdog run.
        post_spawn.connect(lambda **kwargs: sending.watchdog(), weak=False, dispatch_uid="campaigns.watchdog")
