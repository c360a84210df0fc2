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

from ..common.insert_select import columns_and_values, quoted, table
from ..models import ConsentEvent, ConsentRequest, Subscriber


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


# --- The drain's inserts, copied from the request rows (common/insert_select.py) ---

# What a new subscriber takes from the request that created them.
_FROM_REQUEST = ("email", "email_hmac", "source", "time_zone", "signup_page", "signup_referrer", "utm_source",
                 "utm_medium", "utm_campaign")


def create_subscribers(requests: list[ConsentRequest]) -> None:
    """A subscriber for each address of these requests that has none (lower-cased:
    the unique index's own key), from the address's first request in the batch;
    INSERT … SELECT … ON CONFLICT DO NOTHING, so that two drains meeting at one
    address end up with one reader. `bulk_create(ignore_conflicts=True)` is the
    portable twin."""
    if connection.vendor != "postgresql":
        first: dict[str, ConsentRequest] = {}
        for request in requests:
            first.setdefault(request.email.lower(), request)
        Subscriber.objects.bulk_create([
            Subscriber(**{name: getattr(r, name) for name in _FROM_REQUEST}) for r in first.values()],
            ignore_conflicts=True)
        return
    request = quoted_in(ConsentRequest)
    columns, values, params = columns_and_values(
        Subscriber, {name: request(name) for name in _FROM_REQUEST}, {})
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table(Subscriber)} ({columns}) SELECT {values} FROM ("  # noqa: S608
            f"SELECT DISTINCT ON (lower({request('email')})) * FROM {table(ConsentRequest)} r "
            f"WHERE {request('id')} = ANY(%s) ORDER BY lower({request('email')}), {request('created_at')}, "
            f"{request('id')}) r ON CONFLICT DO NOTHING",
            [*params, [r.pk for r in requests]])


def insert_requested_events(requests: list[ConsentRequest], *, at) -> None:
    """The "requested" consent event of each purpose each request asked for, naming
    the texts the reader was shown (already reduced as CONSENT_NETWORK_DATA says),
    in request order; after `mark_processed` has recorded each request's subscriber.
    `bulk_create` is the portable twin."""
    if not requests:
        return
    if connection.vendor != "postgresql":
        ConsentEvent.objects.bulk_create([
            ConsentEvent(subscriber_id=r.subscriber_id, purpose=purpose, action=ConsentEvent.Action.REQUESTED,
                         source=r.source, privacy_notice_id=r.privacy_notice_id, ip_address=r.ip_address,
                         user_agent=r.user_agent, created_at=at,
                         wording_id=r.wording_id if purpose == ConsentEvent.Purpose.ALERTS else r.marketing_wording_id)
            for r in requests for purpose in r.purposes])
        return
    request = quoted_in(ConsentRequest)
    columns, values, params = columns_and_values(ConsentEvent, {
        "subscriber": request("subscriber"), "purpose": "p.purpose", "source": request("source"),
        "wording": "p.wording", "privacy_notice": request("privacy_notice"), "ip_address": request("ip_address"),
        "user_agent": request("user_agent"),
    }, {"action": ConsentEvent.Action.REQUESTED, "created_at": at})
    alerts, marketing = ConsentEvent.Purpose.ALERTS, ConsentEvent.Purpose.MARKETING
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table(ConsentEvent)} ({columns}) SELECT {values} FROM {table(ConsentRequest)} r "  # noqa: S608
            f"CROSS JOIN LATERAL (VALUES (1, %s, {request('alerts')}, {request('wording')}), "
            f"(2, %s, {request('marketing')}, {request('marketing_wording')})) AS p(n, purpose, asked, wording) "
            f"WHERE {request('id')} = ANY(%s) AND p.asked "
            f"ORDER BY {request('created_at')}, {request('id')}, p.n",
            [*params, alerts, marketing, [r.pk for r in requests]])


def quoted_in(model):
    """`r.<column>` of a field of the row aliased `r`."""
    return lambda name: f"r.{quoted(model, name)}"
