from django.core.management.base import BaseCommand, CommandError

from campaigns.demo import DEMO_SANDBOX_PORT, create_demo


class Command(BaseCommand):
    help = (
        "Create demo data: an SES-like sandbox server entry, a list of fake subscribers on "
        "example.test and a draft campaign. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--subscribers",
            type=int,
            default=20_000,
            help="How many fake subscribers (default 20,000: enough for 20 sessions to reach the sandbox's cap).",
        )

    def handle(self, *args, subscribers, **options):
        if subscribers < 1:
            raise CommandError("--subscribers must be at least 1")
        campaign = create_demo(subscribers)
        self.stdout.write(
            f"Demo ready: campaign {campaign.pk} “{campaign.name}” to {subscribers} subscribers through the sandbox "
            f"on 127.0.0.1:{DEMO_SANDBOX_PORT} (`make run` starts it; or `python manage.py smtp_sandbox "
            f"--port {DEMO_SANDBOX_PORT} --max-msgs-per-session 350 --max-conns 20`)."
        )
