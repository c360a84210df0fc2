"""Failover for digests: when a digest run went over to the second provider. A
nullable column: a catalog change only, under a lock timeout so that it never waits
behind a long query with every claim queued behind it."""

from django.db import migrations, models


def set_lock_timeout(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0022_reengagement"),
    ]

    operations = [
        migrations.RunPython(set_lock_timeout, migrations.RunPython.noop),
        migrations.AddField(
            model_name="digestrun",
            name="failover_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(migrations.RunPython.noop, set_lock_timeout),
    ]
