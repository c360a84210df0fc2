"""Failover to a second provider: when an alert went over to it, and which provider
sent each batch. Nullable or constant-default columns: catalog changes only, under a
lock timeout so that they never wait behind a long query with every claim queued
behind them."""

from django.db import migrations, models


def set_lock_timeout(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0017_observe_tracking_event_alert"),
    ]

    operations = [
        migrations.RunPython(set_lock_timeout, migrations.RunPython.noop),
        migrations.AddField(
            model_name="alert",
            name="failover_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="batch",
            name="provider",
            field=models.CharField(blank=True, default="", max_length=60),
        ),
        migrations.RunPython(migrations.RunPython.noop, set_lock_timeout),
    ]
