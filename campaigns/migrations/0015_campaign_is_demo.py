from django.db import migrations, models

# What `manage.py demo` gave the campaigns it made before they were marked: a campaign with all
# three is the demo's (a user's own campaign named "Demo campaign" is left alone).
DEMO = {
    "name": "Demo campaign",
    "subject": "Hello {{ subscriber.name }}, a demo from Relaydeck",
    "from_email": "Relaydeck demo <demo@example.test>",
}


def mark_the_demos(apps, schema_editor):
    apps.get_model("campaigns", "Campaign").objects.filter(**DEMO).update(is_demo=True)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0014_rate_limit_blank_and_active_time"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="is_demo",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(mark_the_demos, migrations.RunPython.noop),
    ]
