"""The retention purge's index on the ledger's send time: a BRIN index (a few pages
summarising each range of the table, since rows are appended in time order), built
CONCURRENTLY outside a transaction, so that deploying it during a send never blocks
the ledger's inserts. PostgreSQL only: SQLite, the development default, has no BRIN,
and its small tables need no index for the purge."""

import django.contrib.postgres.indexes
from django.contrib.postgres import operations as postgres
from django.db import migrations

LOCK_TIMEOUT = "SET lock_timeout = '5s'"
NO_LOCK_TIMEOUT = "SET lock_timeout = 0"


class OnPostgreSQL(migrations.SeparateDatabaseAndState):
    """Database operations that run on PostgreSQL only (no state of their own)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class AddBrinIndexConcurrently(postgres.AddIndexConcurrently):
    """Django's, after dropping what a failed earlier build left behind (an invalid
    index), and without the lock timeout: a build's own lock blocks no insert, and it
    waits for every older transaction, which the timeout would fail. Nothing at all on
    any other database."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{self.index.name}"', params=None)
        schema_editor.execute(NO_LOCK_TIMEOUT, params=None)
        super().database_forwards(app_label, schema_editor, from_state, to_state)
        schema_editor.execute(LOCK_TIMEOUT, params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("alerts", "0010_resilient_sending"),
    ]

    operations = [
        OnPostgreSQL(database_operations=[migrations.RunSQL(LOCK_TIMEOUT, reverse_sql="RESET lock_timeout")]),
        AddBrinIndexConcurrently(
            model_name="delivery",
            index=django.contrib.postgres.indexes.BrinIndex(
                autosummarize=True, fields=["sent_at"], name="delivery_sent_at_brin"),
        ),
        OnPostgreSQL(database_operations=[migrations.RunSQL("RESET lock_timeout", reverse_sql=LOCK_TIMEOUT)]),
    ]
