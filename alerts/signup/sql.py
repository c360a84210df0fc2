"""The one statement of a signup, raw.

Why raw: the ORM's `ConsentRequest.objects.create()` spends about half a millisecond
of Python per signup building the model, compiling the INSERT and reading it back;
at hundreds of signups a second on two cores that is a large share of the request.
The statement is compiled once per process from the model's own table and column
names; `create()` is the portable twin, used on other databases.

Why no health check: with persistent connections (CONN_MAX_AGE) Django sends a
`SELECT 1` before a request's first query (CONN_HEALTH_CHECKS), a second round trip
for a one-statement request. The signup instead retries its statement once on a new
connection if the kept one turns out to be dead (PostgreSQL restarted): the same
protection for one statement. A retry after a commit whose answer was lost stores
the request twice, which is harmless (the drain processes both; the cooldown lets
one email through).
"""

from __future__ import annotations

from functools import cache

from django.db import InterfaceError, OperationalError, connection

from ..models import ConsentRequest


def insert_consent_request(values: dict) -> int:
    """INSERT one ConsentRequest with these field values (by field name, foreign keys
    as `<name>_id`); returns its id."""
    if connection.vendor != "postgresql":
        return ConsentRequest.objects.create(**values).pk
    try:
        return _execute(values)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return _execute(values)


def _execute(values: dict) -> int:
    names, sql = _statement(tuple(values))
    connection.health_check_done = True  # see the module docstring
    with connection.cursor() as cursor:
        cursor.execute(sql, [values[name] for name in names])
        return cursor.fetchone()[0]


@cache
def _statement(names: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    meta = ConsentRequest._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name.removesuffix("_id")).column) for name in names)
    placeholders = ", ".join(["%s"] * len(names))
    return names, (f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "
                   f"RETURNING {quote(meta.pk.column)}")
