"""Subscribers who unsubscribed or were blocklisted before the suppression list existed go on
it, as they would now (an unsubscribe, or a manual entry for a blocklisting)."""

from django.db import migrations
from django.utils import timezone

CHUNK = 1000


def backfill(apps, schema_editor):
    Subscriber = apps.get_model("campaigns", "Subscriber")
    Suppression = apps.get_model("smtp_settings", "Suppression")
    reasons = {
        "unsubscribed": ("unsubscribe", "unsubscribed before the list existed"),
        "blocklisted": ("manual", "blocklisted"),
    }
    left = (
        Subscriber.objects.filter(status__in=reasons).order_by("pk").values_list("email", "status", "unsubscribed_at")
    )
    batch = []
    for email, status, since in left.iterator(chunk_size=CHUNK):
        reason, note = reasons[status]
        batch.append(
            Suppression(email=email.strip().lower(), reason=reason, note=note, created_at=since or timezone.now())
        )
        if len(batch) == CHUNK:
            Suppression.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    Suppression.objects.bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0009_bounces_and_guard_rails"),
        ("smtp_settings", "0006_bounces_suppression_esp"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
