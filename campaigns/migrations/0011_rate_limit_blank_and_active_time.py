"""A campaign's rate limit is blank for "the servers' limits only" (it was 0), and a campaign
keeps its active time (pauses left out) for its average rate. Campaigns sent before have no
record of their pauses: their active time is taken as their whole run."""

import datetime

import django.core.validators
from django.db import migrations, models
from django.db.models import F


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
        ("campaigns", "0010_suppress_earlier_unsubscribes"),
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
                help_text="Messages per second for this campaign. Blank: the servers' limits only.",
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.RunPython(forward, backward),
    ]
