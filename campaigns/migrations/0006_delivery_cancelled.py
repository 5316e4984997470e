from django.db import migrations, models

CANCEL_REPLY = "campaign cancelled"  # what a cancel wrote on the rows it skipped before this status


def skipped_by_a_cancel_become_cancelled(apps, schema_editor):
    Delivery = apps.get_model("campaigns", "Delivery")
    Delivery.objects.filter(status="skipped", last_reply=CANCEL_REPLY).update(status="cancelled")


def cancelled_become_skipped_again(apps, schema_editor):
    Delivery = apps.get_model("campaigns", "Delivery")
    Delivery.objects.filter(status="cancelled").update(status="skipped", last_reply=CANCEL_REPLY)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0005_senders"),
    ]

    operations = [
        migrations.AlterField(
            model_name="delivery",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("sending", "Sending"),
                    ("sent", "Sent"),
                    ("deferred", "Deferred"),
                    ("failed", "Failed"),
                    ("skipped", "Skipped"),
                    ("cancelled", "Cancelled"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
        migrations.RunPython(skipped_by_a_cancel_become_cancelled, cancelled_become_skipped_again),
    ]
