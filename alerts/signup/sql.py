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


def mark_processed(requests: list[ConsentRequest], *, at) -> None:
    """Record each drained request's subscriber (None for an ignored one) and
    processing time in one statement.

    Why raw: `bulk_update` writes a CASE WHEN branch per row for each field, which for
    a drain of 500 costs more Python than the rest of the drain; an UPDATE joined to
    the two id arrays is one short statement. `bulk_update` is the portable twin."""
    if connection.vendor != "postgresql":
        ConsentRequest.objects.bulk_update(requests, ["subscriber", "processed_at"])
        return
    quote = connection.ops.quote_name
    meta = ConsentRequest._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} AS r SET {quote(meta.get_field('subscriber').column)} = v.sid, "
            f"{quote(meta.get_field('processed_at').column)} = %s "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, sid) WHERE r.id = v.id",
            [at, [r.pk for r in requests], [r.subscriber_id for r in requests]])
