"""Migrations change the indexes of the big tables, the ledger (alerts_delivery) and the
subscribers (alerts_subscriber and its topics), without an exclusive lock: CONCURRENTLY,
outside a transaction, with a lock timeout for the brief locks they still take, so that a
deploy during a send does not queue every ledger insert behind an index build (issue 11).

Checked twice. Statically, by walking every migration's operations through the project
state: an operation that changes the set of indexes of Delivery or Subscriber must be a
concurrent one. And for real, by running `manage.py migrate` on a scratch database: every
statement it ran on a big table is checked, and the indexes it built must be exactly the
ones the migrations always built."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from tests.helpers import ROOT

APP = "alerts"
BIG_MODELS = ("delivery", "subscriber")
BIG_TABLES = ("alerts_delivery", "alerts_subscriber", "alerts_subscriber_topics")

# What a migrated database has on the big tables: the indexes and constraints the original
# migrations built, found by running them one by one on a scratch database. A new migration
# that changes them adds its own here.
EXPECTED_INDEXES = {
    ("alerts_delivery", "alerts_delivery_pkey",
     "CREATE UNIQUE INDEX alerts_delivery_pkey ON public.alerts_delivery USING btree (id)"),
    ("alerts_delivery", "delivery_digest_run_batch",
     "CREATE INDEX delivery_digest_run_batch ON public.alerts_delivery USING btree (digest_run_id, batch_id)"
     " WHERE (digest_run_id IS NOT NULL)"),
    ("alerts_delivery", "delivery_message_id",
     "CREATE INDEX delivery_message_id ON public.alerts_delivery USING btree (message_id)"
     " WHERE (NOT ((message_id)::text = ''::text))"),
    ("alerts_delivery", "delivery_once_per_alert",
     "CREATE UNIQUE INDEX delivery_once_per_alert ON public.alerts_delivery USING btree (alert_id, subscriber_id)"),
    ("alerts_delivery", "delivery_once_per_digest_period",
     "CREATE UNIQUE INDEX delivery_once_per_digest_period ON public.alerts_delivery"
     " USING btree (subscriber_id, digest_key) WHERE (NOT ((digest_key)::text = ''::text))"),
    ("alerts_subscriber", "alerts_subscriber_created_at_d8b64141",
     "CREATE INDEX alerts_subscriber_created_at_d8b64141 ON public.alerts_subscriber USING btree (created_at)"),
    ("alerts_subscriber", "alerts_subscriber_pkey",
     "CREATE UNIQUE INDEX alerts_subscriber_pkey ON public.alerts_subscriber USING btree (id)"),
    ("alerts_subscriber", "subscriber_confirmed_id",
     "CREATE INDEX subscriber_confirmed_id ON public.alerts_subscriber USING btree (id)"
     " WHERE ((status)::text = 'confirmed'::text)"),
    ("alerts_subscriber", "subscriber_email_hmac",
     "CREATE INDEX subscriber_email_hmac ON public.alerts_subscriber USING btree (email_hmac)"),
    ("alerts_subscriber", "subscriber_status",
     "CREATE INDEX subscriber_status ON public.alerts_subscriber USING btree (status)"),
    ("alerts_subscriber", "subscriber_unique_email",
     "CREATE UNIQUE INDEX subscriber_unique_email ON public.alerts_subscriber USING btree (lower((email)::text))"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_pkey",
     "CREATE UNIQUE INDEX alerts_subscriber_topics_pkey ON public.alerts_subscriber_topics USING btree (id)"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_subscriber_id_851ad5df",
     "CREATE INDEX alerts_subscriber_topics_subscriber_id_851ad5df ON public.alerts_subscriber_topics"
     " USING btree (subscriber_id)"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_subscriber_id_topic_id_960e2da1_uniq",
     "CREATE UNIQUE INDEX alerts_subscriber_topics_subscriber_id_topic_id_960e2da1_uniq"
     " ON public.alerts_subscriber_topics USING btree (subscriber_id, topic_id)"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_topic_id_717dfc1e",
     "CREATE INDEX alerts_subscriber_topics_topic_id_717dfc1e ON public.alerts_subscriber_topics"
     " USING btree (topic_id)"),
}
EXPECTED_CONSTRAINTS = {
    ("alerts_delivery", "alerts_delivery_pkey", "PRIMARY KEY (id)"),
    ("alerts_delivery", "delivery_once_per_alert", "UNIQUE (alert_id, subscriber_id)"),
    ("alerts_subscriber", "alerts_subscriber_pkey", "PRIMARY KEY (id)"),
    ("alerts_subscriber_topics", "alerts_subscriber_to_subscriber_id_851ad5df_fk_alerts_su",
     "FOREIGN KEY (subscriber_id) REFERENCES alerts_subscriber(id) DEFERRABLE INITIALLY DEFERRED"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_pkey", "PRIMARY KEY (id)"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_subscriber_id_topic_id_960e2da1_uniq",
     "UNIQUE (subscriber_id, topic_id)"),
    ("alerts_subscriber_topics", "alerts_subscriber_topics_topic_id_717dfc1e_fk_alerts_topic_id",
     "FOREIGN KEY (topic_id) REFERENCES alerts_topic(id) DEFERRABLE INITIALLY DEFERRED"),
}


# --- SQL that locks a big table ----------------------------------------------------------

# Each pattern with what is wrong with a statement that matches it.
UNSAFE_SQL = {
    re.compile(r"\bCREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)", re.I):
        "builds an index without CONCURRENTLY, under a lock that stops inserts",
    re.compile(r"\bDROP\s+INDEX\s+(?!CONCURRENTLY\b)", re.I):
        "drops an index without CONCURRENTLY, under an exclusive lock",
    re.compile(r"\bREINDEX\b(?!.*\bCONCURRENTLY\b)", re.I | re.S):
        "rebuilds an index without CONCURRENTLY",
    re.compile(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?(UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b(?!\s+USING\s+INDEX\b)", re.I):
        "builds a constraint's index under an exclusive lock: build it CONCURRENTLY, then ADD CONSTRAINT"
        " ... USING INDEX",
    re.compile(r"\bADD\s+COLUMN\b.*\b(UNIQUE|PRIMARY\s+KEY|REFERENCES)\b", re.I | re.S):
        "adds a column with an index or a foreign key to check, under an exclusive lock",
    re.compile(r'\bALTER\s+TABLE\s+(ONLY\s+)?"?alerts_(delivery|subscriber(_topics)?)\b"?\s.*'
               r"\bFOREIGN\s+KEY\b(?!.*\bNOT\s+VALID\b)", re.I | re.S):
        "checks a foreign key on every row under a lock that stops inserts: add it NOT VALID, then"
        " VALIDATE CONSTRAINT",
}
SETS_LOCK_TIMEOUT = re.compile(r"\bSET\s+(LOCAL\s+)?lock_timeout\s*(=|TO)\s*'?(?!0\b)\d", re.I)
LOCK_TIMEOUT_OFF = re.compile(r"\b(SET\s+(LOCAL\s+)?lock_timeout\s*(=|TO)\s*'?0\b|RESET\s+(lock_timeout|ALL)\b)", re.I)
BIG_TABLE = re.compile(r"\b(alerts_subscriber_topics|alerts_subscriber|alerts_delivery)\b")
# DROP INDEX names no table: the big tables' indexes are named after them, or after their model.
DROPPED_INDEX = re.compile(r'\bDROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?"?(\w+)', re.I)
INDEX_PREFIXES = {"alerts_subscriber_topics_": "alerts_subscriber_topics", "alerts_subscriber_": "alerts_subscriber",
                  "subscriber_": "alerts_subscriber", "alerts_delivery_": "alerts_delivery", "delivery_": "alerts_delivery"}


def statement_hazards(statement: str) -> list[str]:
    return [reason for pattern, reason in UNSAFE_SQL.items() if pattern.search(statement)]


def big_tables_in(statement: str) -> set[str]:
    """The big tables a statement locks, by name or through the index it drops."""
    tables = set(BIG_TABLE.findall(statement))
    for index in DROPPED_INDEX.findall(statement):
        tables |= {table for prefix, table in INDEX_PREFIXES.items() if index.startswith(prefix)}
    return tables


def sql_of(operation: Operation, *, forwards: bool = True) -> list[str]:
    """The statements of a RunSQL, or of those among a SeparateDatabaseAndState's database
    operations, in the direction given."""
    if isinstance(operation, migrations.SeparateDatabaseAndState):
        return [sql for op in operation.database_operations for sql in sql_of(op, forwards=forwards)]
    if not isinstance(operation, migrations.RunSQL):
        return []
    sql = operation.sql if forwards else operation.reverse_sql
    items = [sql] if isinstance(sql, str) else list(sql or [])
    return [item[0] if isinstance(item, list | tuple) else item for item in items if item]


# --- The static check: every operation walked through the project state -----------------

# Field options that leave a column's index as it is (NOT NULL and foreign-key constraints
# are not indexes).
NOT_INDEX_OPTIONS = {"auto_created", "blank", "choices", "db_comment", "db_constraint", "default", "editable",
                     "error_messages", "help_text", "limit_choices_to", "null", "on_delete", "related_name",
                     "related_query_name", "serialize", "validators", "verbose_name"}


def index_keys(state: ProjectState, model: str) -> frozenset[str] | None:
    """Everything PostgreSQL keeps an index for on the model's tables (its Meta indexes,
    unique constraints, indexed fields, many-to-many tables), each described so that a
    change to it changes its description. None if the model does not exist."""
    model_state = state.models.get((APP, model))
    if model_state is None:
        return None
    options = model_state.options
    keys = {f"index {index.deconstruct()!r}" for index in options.get("indexes", [])}
    keys |= {f"constraint {constraint.deconstruct()!r}" for constraint in options.get("constraints", [])
             if not isinstance(constraint, models.CheckConstraint)}
    keys |= {f"unique together {fields!r}" for fields in options.get("unique_together", ())}
    for name, field in model_state.fields.items():
        _, path, _, kwargs = field.deconstruct()
        if field.many_to_many or field.primary_key or field.unique or field.db_index:
            index_options = {key: value for key, value in kwargs.items() if key not in NOT_INDEX_OPTIONS}
            keys.add(f"field {name} {path} {sorted(index_options.items())!r}")
    return frozenset(keys)


class Step(NamedTuple):
    """One operation of a migration, with the big models whose indexes it changes and its
    statements (both ways) on big tables that existed before the migration."""

    operation: Operation
    changes: tuple[str, ...]
    big_sql: tuple[str, ...]


def steps(migration: migrations.Migration, state: ProjectState) -> list[Step]:
    """Walk `migration`'s operations forwards from `state` (which it changes)."""
    created: set[str] = set()
    walked = []
    for operation in migration.operations:
        before = {model: index_keys(state, model) for model in BIG_MODELS}
        operation.state_forwards(APP, state)
        created |= {model for model in BIG_MODELS if before[model] is None}
        changes = tuple(model for model in BIG_MODELS if model not in created
                        and before[model] != index_keys(state, model))
        new_tables = {table for table in BIG_TABLES if table.split("_")[1] in created}
        big_sql = tuple(sql for sql in sql_of(operation) + sql_of(operation, forwards=False)
                        if big_tables_in(sql) - new_tables)
        walked.append(Step(operation, changes, big_sql))
    return walked


def changes_indexes_concurrently(operation: Operation) -> bool:
    if isinstance(operation, AddIndexConcurrently | RemoveIndexConcurrently):
        return True
    if isinstance(operation, migrations.SeparateDatabaseAndState):
        return all(changes_indexes_concurrently(op) for op in operation.database_operations)
    if isinstance(operation, migrations.RunSQL):
        return not any(statement_hazards(sql) for sql in sql_of(operation) + sql_of(operation, forwards=False))
    return False


def sets_lock_timeout(operation: Operation, *, forwards: bool) -> bool:
    return any(SETS_LOCK_TIMEOUT.search(sql) for sql in sql_of(operation, forwards=forwards))


def lock_hazards(migration: migrations.Migration, state: ProjectState) -> list[str]:
    """Why applying or reverting `migration` from `state` would take an exclusive lock to
    change an index of a big table, or wait for a lock with no timeout; [] if it would not."""
    name = f"{migration.app_label}.{migration.name}"
    walked = steps(migration, state)
    hazards = [f"{name}: {step.operation.describe()}: {sql}: {reason}"
               for step in walked for sql in step.big_sql for reason in statement_hazards(sql)]
    hazards += [f"{name}: {step.operation.describe()}: changes an index of {', '.join(step.changes)} under an"
                " exclusive lock (use AddIndexConcurrently, or SeparateDatabaseAndState with CONCURRENTLY SQL)"
                for step in walked if step.changes and not changes_indexes_concurrently(step.operation)]
    if any(step.changes for step in walked) and migration.atomic:
        hazards.append(f"{name}: changes an index of a big table in a transaction (set atomic = False)")
    return hazards + [f"{name}: {hazard}" for hazard in lock_timeout_hazards(walked)]


def lock_timeout_hazards(walked: list[Step]) -> list[str]:
    """Each way (backwards, the operations are reverted last first), a lock_timeout must be
    set before the first operation that changes a big table's index."""
    hazards = []
    for forwards, ordered in ((True, walked), (False, walked[::-1])):
        first = next((i for i, step in enumerate(ordered) if step.changes), None)
        if first is not None and not any(sets_lock_timeout(step.operation, forwards=forwards)
                                         for step in ordered[:first]):
            direction = "forwards" if forwards else "backwards"
            hazards.append(f"no SET lock_timeout before {ordered[first].operation.describe()} ({direction})")
    return hazards


@pytest.fixture(scope="module")
def loader() -> MigrationLoader:
    return MigrationLoader(None, ignore_no_migrations=True)


def alerts_nodes(loader: MigrationLoader) -> list[tuple[str, str]]:
    [leaf] = loader.graph.leaf_nodes(APP)
    return [node for node in loader.graph.forwards_plan(leaf) if node[0] == APP]


def test_no_migration_changes_an_index_of_a_big_table_under_an_exclusive_lock(loader):
    hazards = [hazard for node in alerts_nodes(loader)
               for hazard in lock_hazards(loader.get_migration(*node), loader.project_state(node, at_end=False))]
    assert hazards == []


def test_the_walk_sees_every_migration_that_changes_the_ledgers_or_subscribers_indexes(loader):
    changing = {name for app, name in alerts_nodes(loader)
                if any(step.changes for step in steps(loader.get_migration(app, name),
                                                       loader.project_state((app, name), at_end=False)))}
    assert changing >= {"0003_digests", "0004_lean_delivery_ledger", "0005_ledger_indexes",
                        "0006_subscriber_indexes", "0008_ledger_alert_first", "0009_ledger_without_batch_index"}
    assert "0007_batch_open_indexes" not in changing  # alerts_batch only


# --- The check bites: migrations written the unsafe way --------------------------------

SET_LOCK_TIMEOUT = migrations.RunSQL("SET lock_timeout = '5s'", reverse_sql="RESET lock_timeout")
RESET_LOCK_TIMEOUT = migrations.RunSQL("RESET lock_timeout", reverse_sql="SET lock_timeout = '5s'")
SENT_AT = models.Index(fields=["sent_at"], name="delivery_sent_at")


def fake_migration(*operations: Operation, atomic: bool = True) -> migrations.Migration:
    attributes = {"operations": list(operations), "atomic": atomic, "dependencies": []}
    return type("Migration", (migrations.Migration,), attributes)("0099_fake", APP)


@pytest.fixture
def latest(loader) -> ProjectState:
    return loader.project_state(loader.graph.leaf_nodes(APP))


def test_the_check_reports_a_plain_add_index_on_the_ledger(latest):
    migration = fake_migration(SET_LOCK_TIMEOUT, migrations.AddIndex("delivery", SENT_AT), RESET_LOCK_TIMEOUT,
                               atomic=False)
    [hazard] = lock_hazards(migration, latest)
    assert "Create index delivery_sent_at" in hazard and "under an exclusive lock" in hazard


def test_the_check_reports_a_concurrent_build_inside_the_migrations_transaction(latest):
    migration = fake_migration(SET_LOCK_TIMEOUT, AddIndexConcurrently("delivery", SENT_AT), RESET_LOCK_TIMEOUT)
    assert lock_hazards(migration, latest) == [
        "alerts.0099_fake: changes an index of a big table in a transaction (set atomic = False)"]


def test_the_check_reports_a_concurrent_build_with_no_lock_timeout_either_way(latest):
    migration = fake_migration(AddIndexConcurrently("delivery", SENT_AT), atomic=False)
    hazards = lock_hazards(migration, latest)
    assert [hazard.rsplit(" ", 1)[-1] for hazard in hazards] == ["(forwards)", "(backwards)"]


def test_the_check_reports_a_unique_constraint_added_in_one_statement(latest):
    constraint = models.UniqueConstraint(fields=["batch", "subscriber"], name="delivery_batch_subscriber")
    migration = fake_migration(
        SET_LOCK_TIMEOUT,
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddConstraint("delivery", constraint)],
            database_operations=[migrations.RunSQL(
                'ALTER TABLE "alerts_delivery" ADD CONSTRAINT "delivery_batch_subscriber" UNIQUE ("batch_id", "subscriber_id")',
                reverse_sql='ALTER TABLE "alerts_delivery" DROP CONSTRAINT "delivery_batch_subscriber"')],
        ),
        RESET_LOCK_TIMEOUT,
        atomic=False,
    )
    hazards = lock_hazards(migration, latest)
    assert any("USING INDEX" in hazard for hazard in hazards)
    assert any("under an exclusive lock (use AddIndexConcurrently" in hazard for hazard in hazards)


def test_the_check_reports_a_field_given_an_index(latest):
    frequency = models.CharField(choices=[("immediate", "As it happens")], default="immediate", max_length=10,
                                 db_index=True)
    migration = fake_migration(SET_LOCK_TIMEOUT, migrations.AlterField("subscriber", "frequency", frequency),
                               RESET_LOCK_TIMEOUT, atomic=False)
    [hazard] = lock_hazards(migration, latest)
    assert "Alter field frequency on subscriber: changes an index of subscriber" in hazard


def test_the_check_reports_raw_sql_that_builds_an_index_on_the_ledger(latest):
    migration = fake_migration(migrations.RunSQL('CREATE INDEX "delivery_sent_at" ON "alerts_delivery" ("sent_at")',
                                                 reverse_sql='DROP INDEX "delivery_sent_at"'))
    hazards = lock_hazards(migration, latest)
    assert [hazard.rsplit(": ", 1)[-1] for hazard in hazards] == [
        "builds an index without CONCURRENTLY, under a lock that stops inserts",
        "drops an index without CONCURRENTLY, under an exclusive lock"]


def test_the_check_passes_a_concurrent_build_outside_a_transaction_with_a_lock_timeout(latest):
    migration = fake_migration(SET_LOCK_TIMEOUT, AddIndexConcurrently("delivery", SENT_AT), RESET_LOCK_TIMEOUT,
                               atomic=False)
    assert lock_hazards(migration, latest) == []


def test_the_check_leaves_other_tables_alone(latest):
    index = models.Index(fields=["sent_at"], name="batch_sent_at")
    assert lock_hazards(fake_migration(migrations.AddIndex("batch", index)), latest) == []


# --- The real thing: `manage.py migrate` on a scratch database --------------------------

# manage.py, with every statement the schema editor runs (migrations' RunSQL and
# RunPython included) written to stdout in between the command's own "Applying ..." lines.
MANAGE_LOGGING_SCHEMA = """
import logging, sys
import django
django.setup()
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("schema: %(message)s"))
schema = logging.getLogger("django.db.backends.schema")
schema.addHandler(handler)
schema.setLevel(logging.DEBUG)
schema.propagate = False
from django.core.management import call_command
call_command(*sys.argv[1:])
"""
MIGRATE_LOG = re.compile(r"(?P<verb>Applying|Unapplying) (?P<app>\w+)\.(?P<migration>\w+)\.\.\."
                         r"|schema: (?P<sql>.*?); \(params [^\n]*\)$", re.M)


def manage(*args: str, database_url: str) -> str:
    """Run a management command in a process of its own on `database_url`, as a deploy
    does; its output, with every schema statement it ran."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings", "DATABASE_URL": database_url,
           "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-c", MANAGE_LOGGING_SCHEMA, *args, "--noinput"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


def statements_by_migration(output: str) -> dict[str, list[str]]:
    """The schema statements `migrate` ran, by alerts migration, in order."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for match in MIGRATE_LOG.finditer(output):
        if match["verb"]:
            current = found.setdefault(match["migration"], []) if match["app"] == APP else None
        elif current is not None:
            current.append(match["sql"])
    return found


class Schema(NamedTuple):
    indexes: set[tuple[str, str, str]]
    constraints: set[tuple[str, str, str]]
    invalid_indexes: list[str]
    alerts_tables: list[str]


def schema_of(database_url: str) -> Schema:
    with psycopg.connect(database_url) as conn:
        indexes = conn.execute("SELECT tablename, indexname, indexdef FROM pg_indexes"
                               " WHERE schemaname = 'public' AND tablename = ANY(%s)", [list(BIG_TABLES)])
        constraints = conn.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                                   " FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s)", [list(BIG_TABLES)])
        invalid = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT (indisvalid AND indisready)")
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'alerts\\_%'")
        return Schema(set(indexes.fetchall()), set(constraints.fetchall()), [row[0] for row in invalid],
                      sorted(row[0] for row in tables))


class Migrated(NamedTuple):
    forwards: dict[str, list[str]]
    backwards: dict[str, list[str]]
    schema: Schema
    schema_at_zero: Schema
    schema_again: Schema


@pytest.fixture(scope="module")
def scratch_database(django_db_setup) -> Iterator[str]:
    """The URL of an empty database of its own, next to the test database; dropped after."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_migrations"
    user = quote(db["USER"]) + (":" + quote(db["PASSWORD"]) if db.get("PASSWORD") else "")
    server_url = f"postgres://{user}@{db['HOST']}:{db['PORT'] or 5432}/postgres"
    with psycopg.connect(server_url, autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        server.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{user}@{db['HOST']}:{db['PORT'] or 5432}/{name}"
    with psycopg.connect(server_url, autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="module")
def migrated(scratch_database) -> Migrated:
    """Every migration applied to an empty database, all of alerts' reverted, applied again."""
    forwards = statements_by_migration(manage("migrate", database_url=scratch_database))
    schema = schema_of(scratch_database)
    backwards = statements_by_migration(manage("migrate", APP, "zero", database_url=scratch_database))
    schema_at_zero = schema_of(scratch_database)
    manage("migrate", database_url=scratch_database)
    return Migrated(forwards, backwards, schema, schema_at_zero, schema_of(scratch_database))


def test_migrating_an_empty_database_builds_exactly_the_indexes_it_always_did(migrated):
    assert migrated.schema.indexes == EXPECTED_INDEXES
    assert migrated.schema.constraints == EXPECTED_CONSTRAINTS


def test_no_concurrent_build_is_left_invalid(migrated):
    assert migrated.schema.invalid_indexes == []


def test_every_alerts_migration_reverts_and_applies_again_to_the_same_indexes(migrated):
    assert migrated.schema_at_zero.alerts_tables == []
    assert migrated.schema_again == migrated.schema
    assert len(migrated.backwards) == len(migrated.forwards) >= 10


def lock_waits_and_hazards(name: str, statements: list[str], new_tables: set[str]) -> list[str]:
    """What is wrong with `statements`, one migration's run one way: a statement that
    locks a big table against inserts, or waits for a lock on one with no timeout (only a
    concurrent build may: its lock stops no insert)."""
    found, timeout = [], False
    for sql in statements:
        timeout = bool(SETS_LOCK_TIMEOUT.search(sql)) or (timeout and not LOCK_TIMEOUT_OFF.search(sql))
        if not big_tables_in(sql) - new_tables:
            continue
        found += [f"{name}: {sql}: {reason}" for reason in statement_hazards(sql)]
        if not timeout and not re.search(r"\bCREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\b", sql, re.I):
            found.append(f"{name}: {sql}: waits for its lock with no lock_timeout")
    return found


def test_no_statement_migrate_runs_on_a_big_table_stops_inserts_or_waits_without_a_timeout(migrated):
    found = []
    for name, statements in migrated.forwards.items():
        # A table created (or, backwards, dropped) by a migration is empty or going.
        new_tables = {table for table in BIG_TABLES
                      if any(f'CREATE TABLE "{table}"' in sql for sql in statements)}
        found += lock_waits_and_hazards(name, statements, new_tables)
        found += lock_waits_and_hazards(f"{name} (backwards)", migrated.backwards[name], new_tables)
    assert found == []


def test_the_migrations_run_where_the_check_can_see_them(migrated):
    """The log is read right: the ledger's unique index is swapped in, not rebuilt in place."""
    assert 'ALTER TABLE "alerts_delivery" DROP CONSTRAINT IF EXISTS "delivery_once_per_alert", ADD CONSTRAINT' \
           ' "delivery_once_per_alert" UNIQUE USING INDEX "delivery_once_per_alert_new"' \
           in migrated.forwards["0008_ledger_alert_first"]
    assert lock_waits_and_hazards("0099_fake", ['CREATE INDEX "x" ON "alerts_delivery" ("status")'], set()) == [
        '0099_fake: CREATE INDEX "x" ON "alerts_delivery" ("status"): builds an index without CONCURRENTLY,'
        " under a lock that stops inserts",
        '0099_fake: CREATE INDEX "x" ON "alerts_delivery" ("status"): waits for its lock with no lock_timeout']


def test_the_development_default_sqlite_migrates_forwards_and_back(tmp_path):
    """SQLite has no CONCURRENTLY: there the migrations do what Django does."""
    path = tmp_path / "dev.sqlite3"
    for args in (["migrate"], ["migrate", APP, "zero"], ["migrate"]):
        manage(*args, database_url=f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"delivery_message_id", "delivery_digest_run_batch", "delivery_once_per_digest_period",
            "subscriber_email_hmac", "subscriber_status"} <= indexes
