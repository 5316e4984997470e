"""The table of the "shared" cache when it is kept in the database (settings.CACHES): made
here, whatever the settings, so that `migrate` is all a deployment runs, with or without Redis."""

from django.core.management import call_command
from django.db import migrations

TABLE = "relaydeck_shared_cache"


def create(apps, schema_editor):
    call_command("createcachetable", TABLE, database=schema_editor.connection.alias, verbosity=0)


def drop(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("project", "0001_password_change_required")]

    operations = [migrations.RunPython(create, drop)]
