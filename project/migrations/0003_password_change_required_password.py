from django.db import migrations, models


def _hash_of_the_current_password(apps, schema_editor):
    """The flags made so far were made with the password their account still has, or had: they
    hold for the first, and no longer for an account whose password has changed since."""
    flags = apps.get_model("project", "PasswordChangeRequired")
    for flag in flags.objects.select_related("user"):
        flag.password = flag.user.password
        flag.save(update_fields=["password"])


class Migration(migrations.Migration):
    dependencies = [("project", "0002_shared_cache_table")]

    operations = [
        migrations.AddField(
            model_name="passwordchangerequired",
            name="password",
            field=models.CharField(
                default="", help_text="The hash of the password that must be replaced.", max_length=128
            ),
            preserve_default=False,
        ),
        migrations.RunPython(_hash_of_the_current_password, migrations.RunPython.noop),
    ]
