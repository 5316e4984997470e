import json
from functools import partial
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from campaigns.models import Campaign, MailingList
from campaigns.progress import progress
from smtp_settings.models import SmtpServer

# Fields the command has no option for: a new campaign gets their defaults, as on the form.
DEFAULTED = ("auto_pause_after", "max_complaint_rate", "max_hard_bounce_rate", "guard_min_sample")


class Command(BaseCommand):
    help = "Create, launch, pause, resume or cancel a campaign, or print its status."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="Create a draft campaign and print its id.")
        create.add_argument("--name", required=True)
        create.add_argument("--subject", required=True)
        create.add_argument("--from-email", required=True)
        create.add_argument("--reply-to", default="")
        create.add_argument("--list", action="append", required=True, help="A list name (repeatable).")
        create.add_argument("--server", action="append", required=True, help="An SMTP server name (repeatable).")
        create.add_argument("--html-file", required=True, type=Path)
        create.add_argument("--text-file", type=Path)
        create.add_argument(
            "--rate-limit", type=float, help="Messages per second; without it, the servers' limits only."
        )
        for name, text in [
            ("launch", "Start sending (idempotent)."),
            ("pause", "Pause sending."),
            ("resume", "Resume a paused campaign."),
            ("cancel", "Stop for good."),
            ("status", "Print counts."),
        ]:
            action = actions.add_parser(name, help=text)
            action.add_argument("id", type=int)
            if name == "status":
                action.add_argument("--json", action="store_true", help="One JSON object.")

    def handle(self, *args, **options):
        action = options["action"]
        if action == "create":
            return self._create(options)
        try:
            campaign = Campaign.objects.get(pk=options["id"])
        except Campaign.DoesNotExist:
            raise CommandError(f"no campaign with id {options['id']}") from None
        if action == "status":
            return self._status(campaign, options["json"])
        if action == "launch" and not campaign.servers.filter(enabled=True).exists():
            raise CommandError(f"campaign {campaign.pk} has no enabled SMTP server")
        change = {
            "launch": campaign.launch,
            "pause": partial(campaign.pause, "Paused from the command line."),
            "resume": campaign.resume,
            "cancel": campaign.cancel,
        }[action]
        if not change():
            raise CommandError(f"campaign {campaign.pk} is {campaign.status}: cannot {action} it")
        self.stdout.write(f"campaign {campaign.pk} is {campaign.status}")

    def _create(self, options) -> None:
        from campaigns.forms import CampaignForm

        html = self._read(options["html_file"])
        text = self._read(options["text_file"]) if options["text_file"] else ""
        lists = self._named(MailingList, options["list"], "list")
        servers = self._named(SmtpServer, options["server"], "SMTP server")
        form = CampaignForm(
            data={
                "name": options["name"],
                "subject": options["subject"],
                "from_email": options["from_email"],
                "reply_to": options["reply_to"],
                "html_body": html,
                "text_body": text,
                "lists": [item.pk for item in lists],
                "servers": [item.pk for item in servers],
                "rate_limit": "" if options["rate_limit"] is None else options["rate_limit"],
                **{name: Campaign._meta.get_field(name).default for name in DEFAULTED},
            }
        )
        if not form.is_valid():
            field, errors = next(iter(form.errors.items()))
            raise CommandError(f"{field}: {errors[0]}")
        with transaction.atomic():
            campaign = form.save()
        self.stdout.write(str(campaign.pk))

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read {path}: {error}") from None

    @staticmethod
    def _named(model, names: list[str], what: str) -> list:
        found = {item.name: item for item in model.objects.filter(name__in=names)}
        missing = [name for name in names if name not in found]
        if missing:
            raise CommandError(f"no {what} named {missing[0]!r}")
        return [found[name] for name in names]

    def _status(self, campaign: Campaign, as_json: bool) -> None:
        now = progress(campaign)
        status = {
            "id": campaign.pk,
            "status": campaign.status,
            "total": now.total,
            "sent": now.counts["sent"],
            "failed": now.counts["failed"],
            "deferred": now.counts["deferred"],
            "pending": now.counts["pending"] + now.counts["sending"],
            "skipped": now.counts["skipped"],
            "cancelled": now.counts["cancelled"],
            "ambiguous": now.ambiguous,
        }
        if as_json:
            self.stdout.write(json.dumps(status))
        else:
            self.stdout.write(" ".join(f"{key}={value}" for key, value in status.items()))
