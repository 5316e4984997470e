"""A campaign's rate limit is blank for "the servers' limits only" (it was 0), and a campaign
keeps its active time (pauses left out) for its average rate. Campaigns sent before have no
record of their pauses: their active time is taken as their whole run."""

import datetime

from django.db import migrations, models
from django.db.models import F

import project.numbers


def forward(apps, schema_editor):
    Campaign = apps.get_model("campaigns", "Campaign")
    Campaign.objects.filter(rate_limit=0).update(rate_limit=None)
    Campaign.objects.filter(status="running").update(running_since=F("started_at"))
    for campaign in Campaign.objects.filter(started_at__isnull=False).exclude(status="running"):
        end = campaign.finished_at or campaign.updated_at
        campaign.active_time = max(end - campaign.started_at, datetime.timedelta(0))
        campaign.save(update_fields=["active_time"])


def backward(apps, schema_editor):
    apps.get_model("campaigns", "Campaign").objects.filter(rate_limit=None).update(rate_limit=0)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0013_event_connection_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="active_time",
            field=models.DurationField(default=datetime.timedelta(0), editable=False),
        ),
        migrations.AddField(
            model_name="campaign",
            name="running_since",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="campaign",
            name="rate_limit",
            field=models.FloatField(
                blank=True,
                help_text="Messages per second for this campaign, 0–100,000. Blank or 0: the servers' limits only.",
                null=True,
                validators=[
                    project.numbers.AtLeast(0, message="Enter a number from 0 to 100,000."),
                    project.numbers.AtMost(100000, message="Enter a number from 0 to 100,000."),
                ],
            ),
        ),
        migrations.RunPython(forward, backward),
    ]
