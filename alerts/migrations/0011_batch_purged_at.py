"""When the retention purge deleted a batch's ledger rows. A nullable column without a
default: a catalog change only, under a lock timeout so that it never waits behind a
long query with every claim queued behind it."""

from django.db import migrations, models


def set_lock_timeout(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0010_resilient_sending"),
    ]

    operations = [
        migrations.RunPython(set_lock_timeout, migrations.RunPython.noop),
        migrations.AddField(
            model_name="batch",
            name="purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(migrations.RunPython.noop, set_lock_timeout),
    ]
