from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from campaigns.demo import DEMO_SANDBOX_PORT, create_demo
from campaigns.progress import reach_by_campaign


class Command(BaseCommand):
    help = (
        "Create demo data: an SES-like sandbox server entry, a list of fake subscribers on "
        "example.test and a draft campaign. Run again, it makes the demo ready to run again: a "
        "finished demo campaign makes way for a fresh draft and the sandbox server entry forgets "
        "the limits it learned (unless the demo campaign is under way: then nothing changes)."
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
        demo = create_demo(subscribers)
        campaign = demo.campaign
        if campaign.status in campaign.UNDER_WAY:
            self.stdout.write(
                f"The demo campaign {campaign.pk} is {campaign.get_status_display().lower()}: left as it is. "
                "Cancel it (or let it finish) and run `manage.py demo` again for a fresh one."
            )
            return
        reach = reach_by_campaign([campaign.pk])[campaign.pk]  # as its page says "Will go to"
        learned = "" if demo.notes else ", which has forgotten any limits it learned"
        self.stdout.write(
            f"Demo ready: campaign {campaign.pk} “{campaign.name}”, a draft, to {intcomma(reach)} "
            f"subscriber{pluralize(reach)} through the sandbox on 127.0.0.1:{DEMO_SANDBOX_PORT}{learned} (`make run` "
            f"starts it; or `python manage.py smtp_sandbox --port {DEMO_SANDBOX_PORT} --max-msgs-per-session 350 "
            "--max-conns 20`)."
        )
        for note in demo.notes:
            self.stdout.write(f"Note: {note}")
