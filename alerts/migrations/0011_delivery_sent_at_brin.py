"""The retention purge's index on the ledger's send time: a BRIN index, built
CONCURRENTLY outside a transaction with a lock timeout, so that deploying it during a
send never blocks the ledger's inserts. PostgreSQL only (SQLite, the development
default, has no BRIN; its small tables need no index for the purge)."""

import django.contrib.postgres.indexes
from django.db import migrations

CREATE = ("CREATE INDEX CONCURRENTLY IF NOT EXISTS delivery_sent_at_brin ON alerts_delivery"
          " USING brin (sent_at) WITH (autosummarize = on)")
DROP = "DROP INDEX CONCURRENTLY IF EXISTS delivery_sent_at_brin"


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute("SET lock_timeout = '5s'")
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("alerts", "0010_resilient_sending"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="delivery",
                    index=django.contrib.postgres.indexes.BrinIndex(
                        autosummarize=True, fields=["sent_at"], name="delivery_sent_at_brin"),
                ),
            ],
            database_operations=[
                migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP)),
            ],
        ),
    ]
