"""The three wording foreign keys of ConsentRequest lose their indexes: nothing looks
requests up by wording, and every signup's INSERT (and the drain's UPDATE after it)
wrote three index entries for them (see the model). Dropping an index is quick but
takes the table's lock, so it waits at most 5 s for it rather than queueing every
signup behind a long query."""

import django.db.models.deletion
from django.db import migrations, models


def set_lock_timeout(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL lock_timeout = '5s'")


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0023_digest_failover"),
    ]

    operations = [
        migrations.RunPython(set_lock_timeout, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="consentrequest",
            name="marketing_wording",
            field=models.ForeignKey(blank=True, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                    to="alerts.wording"),
        ),
        migrations.AlterField(
            model_name="consentrequest",
            name="privacy_notice",
            field=models.ForeignKey(blank=True, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                    to="alerts.wording"),
        ),
        migrations.AlterField(
            model_name="consentrequest",
            name="wording",
            field=models.ForeignKey(blank=True, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                    to="alerts.wording"),
        ),
        migrations.RunPython(migrations.RunPython.noop, set_lock_timeout),
    ]
