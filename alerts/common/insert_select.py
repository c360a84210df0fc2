"""The pieces of an `INSERT … SELECT` that fills a table from rows already in the
database, with the model's own defaults for every column the SELECT does not give.

Why: a drain turns hundreds of stored requests into subscribers, consent events and
outbox rows at a time. Through `bulk_create` Django prepares every field of every row
in Python (about two thirds of a drain's CPU); copied by PostgreSQL from the request
rows, the Python cost is per statement, not per row. The defaults come from the
model's fields, evaluated once per statement, so a field added to the model later is
filled the way the ORM would fill it (no default here is unique per row: a callable
default that must be, such as a token, would need its own column expression).
"""

from __future__ import annotations

from django.db import connection
from django.db.models import Model


def quoted(model: type[Model], name: str) -> str:
    """The quoted column of a field, by field name (a foreign key's `_id` accepted)."""
    return connection.ops.quote_name(model._meta.get_field(name.removesuffix("_id")).column)


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def columns_and_values(model: type[Model], given: dict[str, str], fixed: dict[str, object]) -> tuple[str, str, list]:
    """(column list, select list, parameters) for INSERT INTO model (...) SELECT ...

    `given` maps field names to SQL expressions of the SELECT; `fixed` maps field
    names to one value for every row; every other concrete field but the primary key
    gets its default, except fields with a database default (left to PostgreSQL)."""
    columns, values, params = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        if field.name in given or field.attname in given:
            columns.append(field.column)
            values.append(given.get(field.name) or given[field.attname])
            continue
        if field.name in fixed or field.attname in fixed:
            value = fixed[field.name] if field.name in fixed else fixed[field.attname]
        elif field.has_db_default():
            continue
        else:
            value = field.get_default()
        columns.append(field.column)
        values.append("%s")
        params.append(field.get_db_prep_save(value, connection))
    quote = connection.ops.quote_name
    return ", ".join(quote(c) for c in columns), ", ".join(values), params
