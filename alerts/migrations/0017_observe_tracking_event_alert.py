# Observability: each provider event names its alert and the reader's mailbox provider,
# for time to inbox and engagement per alert (alerts/observability/).

import django.db.models.deletion
from django.contrib.postgres import operations as postgres
from django.db import migrations, models

# The event table takes a row per recipient of every alert, so, as for the ledger: on
# PostgreSQL the index is built CONCURRENTLY outside a transaction, after dropping what
# a failed build left behind, and adding the columns (which rewrites nothing: both are
# nullable or have a constant default) waits at most LOCK_TIMEOUT for its brief lock.
LOCK_TIMEOUT = "SET lock_timeout = '5s'"
NO_LOCK_TIMEOUT = "SET lock_timeout = 0"


def drop_index(name):
    return f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'


class OnPostgreSQL(migrations.SeparateDatabaseAndState):
    """The state operations, with the database side done by database_operations on
    PostgreSQL and by the state operations themselves on any other database."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._here(schema_editor).database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._here(schema_editor).database_backwards(app_label, schema_editor, from_state, to_state)

    def _here(self, schema_editor):
        on_postgresql = schema_editor.connection.vendor == "postgresql"
        return migrations.SeparateDatabaseAndState(
            database_operations=self.database_operations if on_postgresql else self.state_operations
        )


class AddIndexConcurrently(postgres.AddIndexConcurrently):
    """Django's, without the lock timeout and after dropping an invalid leftover; a
    plain AddIndex on any other database."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)
        schema_editor.execute(drop_index(self.index.name), params=None)
        schema_editor.execute(NO_LOCK_TIMEOUT, params=None)
        super().database_forwards(app_label, schema_editor, from_state, to_state)
        schema_editor.execute(LOCK_TIMEOUT, params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
        super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('alerts', '0012_security_review'),
    ]

    operations = [
        OnPostgreSQL(database_operations=[migrations.RunSQL(LOCK_TIMEOUT, reverse_sql="RESET lock_timeout")]),
        migrations.AddField(
            model_name='trackingevent',
            name='alert',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='alerts.alert'),
        ),
        migrations.AddField(
            model_name='trackingevent',
            name='mailbox',
            field=models.CharField(blank=True, default='', max_length=12),
        ),
        AddIndexConcurrently(
            model_name='trackingevent',
            index=models.Index(condition=models.Q(('alert__isnull', False)), fields=['alert', 'event_type', 'occurred_at'], name='tracking_event_by_alert'),
        ),
        OnPostgreSQL(database_operations=[migrations.RunSQL("RESET lock_timeout", reverse_sql=LOCK_TIMEOUT)]),
    ]
