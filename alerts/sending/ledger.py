"""Every raw statement of the sending engine, in one place.

Each function here is one statement (or one round trip) on the hot path of a send,
written by hand because the ORM cannot say it or says it too slowly; its docstring
says which. Beside each is its portable twin, the ORM (or SQLite) form that gives the
same rows: the development default runs on SQLite, and tests/sending/test_ledger.py
runs every statement and its twin on PostgreSQL and compares what they leave behind.

Table names come from `Model._meta.db_table`, never written out.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import connection as db
from django.db import models, transaction
from django.db.models import Case, Count, F, Q, When
from django.db.models.functions import Coalesce, Greatest, Now
from django.utils import timezone

from ..models import Alert, Batch, Delivery, DigestRun, Subscriber, Suppression

ALERT = Alert._meta.db_table
BATCH = Batch._meta.db_table
DELIVERY = Delivery._meta.db_table
DIGEST_RUN = DigestRun._meta.db_table
SUPPRESSION = Suppression._meta.db_table


class Outcome(NamedTuple):
    """What became of one recipient of a provider call: one ledger row."""

    subscriber_id: int
    status: str  # a Delivery.Status
    message_id: str = ""
    error: str = ""


def outcomes(subscriber_ids, status: str, message_id: str = "", error: str = "") -> list[Outcome]:
    """One Outcome per reader, all alike: what a provider call usually returns. Built
    with tuple.__new__, a fifth of the cost of NamedTuple's own constructor, which is
    a measurable share of a thousand-reader batch."""
    new, row = tuple.__new__, (status, message_id, error)
    return [new(Outcome, (sid, *row)) for sid in subscriber_ids]


# Ledger states that do not count as handed to the provider.
NOT_SENT = (Delivery.Status.FAILED, Delivery.Status.PENDING, Delivery.Status.SKIPPED)


def on_postgresql() -> bool:
    return db.vendor == "postgresql"


def bigint_array(ids: list[int]) -> str:
    """A PostgreSQL bigint[] literal, for `%s::bigint[]`. Django's psycopg cursor binds
    parameters client-side, and adapting a list of a thousand ints there costs ten
    times the join (about 1.3 ms a batch)."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def text_array(values: list[str]) -> str:
    """A PostgreSQL text[] literal, for `%s::text[]`: every element quoted, `"` and `\\`
    escaped. For the same reason as bigint_array: a batch's parallel arrays of
    per-reader message ids, statuses and errors (SendGrid, Postmark, Brevo, Unisender
    Go give each reader an id) adapted as lists take about 6 ms of CPU a 1,000-reader
    batch, as literals 0.7 ms."""
    return "{" + ",".join(['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]) + "}"


# --- The cut ---------------------------------------------------------------------------

class Step(NamedTuple):
    """One step of the walk over an audience, in id order."""

    starts: list[int]  # ids of the members at positions start, start + size, ...
    found: int  # members in this step
    scanned: int  # rows read (members and suppressed alike)
    last_member: int | None
    last_read: int | None


def walk_step(sql: str, params: tuple, start: int, size: int, *, join_suppressions: bool) -> Step:
    """One step of the cut over the id query `sql` (PostgreSQL).

    Raw because one array per step (`array_agg`, then `generate_series` to pick every
    size-th id) is cheaper than numbering the step's rows with window functions, and
    because the suppression list is joined here once per step as a hash join: as the
    ORM's per-row NOT EXISTS under the step's LIMIT, PostgreSQL probes the suppression
    index once per subscriber, two thirds of a step's time. With `join_suppressions`,
    `sql` selects (sid, hmac); without, (sid).
    """
    members, join = "array_agg(a.sid ORDER BY a.sid)", ""
    if join_suppressions:
        # An address has at most one active suppression, so the join adds no rows.
        members += " FILTER (WHERE s.email_hmac IS NULL)"
        join = f" LEFT JOIN {SUPPRESSION} AS s ON s.email_hmac = a.hmac AND s.lifted_at IS NULL"
    query = (
        "SELECT ids[i], cardinality(ids), scanned, ids[cardinality(ids)], last_read"
        f" FROM (SELECT {members} AS ids, count(*) AS scanned, max(a.sid) AS last_read"
        f"       FROM ({sql}) AS a{join}) AS step"
        " LEFT JOIN generate_series(%s, cardinality(ids), %s) AS i ON true ORDER BY i"
    )
    with transaction.atomic(), db.cursor() as cursor:
        # A parallel plan would take the cores the sending workers need, for a scan
        # that stops after a few thousand rows anyway.
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(query, [*params, start, size])
        rows = cursor.fetchall()
    _, found, scanned, last_member, last_read = rows[0]
    return Step([row[0] for row in rows if row[0] is not None], found or 0, scanned, last_member, last_read)


def walk_step_portable(sql: str, params: tuple, start: int, size: int) -> Step:
    """walk_step's twin (SQLite, no suppression join: `sql` already leaves the
    suppressed out): window functions number the step's rows."""
    query = (
        "SELECT sid, rn, total, last_id FROM ("
        "  SELECT a.sid, row_number() OVER (ORDER BY a.sid) AS rn,"
        "         count(*) OVER () AS total, max(a.sid) OVER () AS last_id"
        f"  FROM ({sql}) AS a"
        ") AS numbered WHERE rn >= %s AND (rn - %s) %% %s = 0 ORDER BY sid"
    )
    with db.cursor() as cursor:
        cursor.execute(query, [*params, start, start, size])
        rows = cursor.fetchall()
        if not rows:
            cursor.execute(f"SELECT count(*), max(a.sid) FROM ({sql}) AS a", params)
            total, last_id = cursor.fetchone()
            return Step([], total, total, last_id, last_id)
    total, last_id = rows[0][2], rows[0][3]
    return Step([sid for sid, _, _, _ in rows], total, total, last_id, last_id)


# --- The claim -------------------------------------------------------------------------

def database_now() -> datetime:
    """The database's clock. Leases, claims, sweeps and due times all read this one
    clock, so a worker whose own clock runs fast cannot steal a live batch."""
    if not on_postgresql():
        return timezone.now()
    with db.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


def claim(batch_id: int, *, lease: timedelta, task_id: str = "") -> Batch | None:
    """Take the batch for `lease` (from the database's clock): a pending batch that is
    due, one whose lease has run out, or one held by this very task (Celery redelivers
    a task only when its worker died, so its claim is taken back at once). The claimed
    Batch, with `alert_status` and `alert_updated_at` of its alert and
    `owner_failover_at` (its alert's or digest run's failover_at), or None.

    Every claim adds one to `attempts`, the claim's fence; taking a batch that was
    still SENDING adds one to `takeovers`.

    Raw because one conditional `UPDATE … RETURNING` is the claim, the batch and what
    the send needs to know of its alert now, in one round trip; the ORM's update()
    returns only a row count.
    """
    claimed = list(Batch.objects.raw(
        f"UPDATE {BATCH} SET status = %s, attempts = attempts + 1,"
        " takeovers = takeovers + CASE WHEN status = %s THEN 1 ELSE 0 END,"
        " claimed_by = %s, claimed_at = statement_timestamp(),"
        " lease_expires_at = statement_timestamp() + %s * interval '1 second'"
        " WHERE id = %s AND ("
        "  (status = %s AND (next_attempt_at IS NULL OR next_attempt_at <= statement_timestamp()))"
        "  OR (status = %s AND (lease_expires_at < statement_timestamp() OR (claimed_by = %s AND %s <> '')))"
        f") RETURNING *, (SELECT status FROM {ALERT} WHERE id = alert_id) AS alert_status,"
        f" (SELECT updated_at FROM {ALERT} WHERE id = alert_id) AS alert_updated_at,"
        " CASE WHEN alert_id IS NOT NULL"
        f"  THEN (SELECT failover_at FROM {ALERT} WHERE id = alert_id)"
        f"  ELSE (SELECT failover_at FROM {DIGEST_RUN} WHERE id = digest_run_id) END AS owner_failover_at",
        [Batch.Status.SENDING, Batch.Status.SENDING, task_id, lease.total_seconds(), batch_id,
         Batch.Status.PENDING, Batch.Status.SENDING, task_id, task_id],
    ))
    return claimed[0] if claimed else None


def claim_portable(batch_id: int, *, lease: timedelta, task_id: str = "") -> Batch | None:
    """claim's twin, the ORM's reading of it: a conditional update, then reads (three
    round trips; a digest batch's, four). SQLite runs it; tests hold the two to the same rows."""
    now = Now()
    pending_and_due = Q(status=Batch.Status.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    lapsed = Q(status=Batch.Status.SENDING) & Q(lease_expires_at__lt=now)
    redelivered = Q(status=Batch.Status.SENDING, claimed_by=task_id) if task_id else Q(pk__in=[])
    taken = Batch.objects.filter(pending_and_due | lapsed | redelivered, pk=batch_id).update(
        takeovers=Case(When(status=Batch.Status.SENDING, then=F("takeovers") + 1), default=F("takeovers"),
                       output_field=models.PositiveSmallIntegerField()),
        status=Batch.Status.SENDING, attempts=F("attempts") + 1, claimed_by=task_id, claimed_at=now,
        lease_expires_at=now + lease,
    )
    if not taken:
        return None
    batch = Batch.objects.get(pk=batch_id)
    alert = Alert.objects.filter(pk=batch.alert_id).values("status", "updated_at", "failover_at").first() or {}
    batch.alert_status, batch.alert_updated_at = alert.get("status"), alert.get("updated_at")
    if batch.alert_id is not None:
        batch.owner_failover_at = alert.get("failover_at")
    else:
        batch.owner_failover_at = DigestRun.objects.filter(pk=batch.digest_run_id).values_list(
            "failover_at", flat=True).first()
    return batch


def renew(held: dict[int, int], *, lease: timedelta) -> int:
    """Extend the leases of batches still held under their fences ({batch id: attempt
    number}); how many were. A plain ORM update: it runs every few seconds, not per
    reader."""
    if not held:
        return 0
    fenced = Q(pk__in=[])
    for batch_id, fence in held.items():
        fenced |= Q(pk=batch_id, attempts=fence)
    return Batch.objects.filter(fenced, status=Batch.Status.SENDING).update(lease_expires_at=Now() + lease)


def release(batch: Batch, *, error: str, delay: float, timed_out: bool = False, waiting: bool = True) -> bool:
    """Hand a claimed batch back for a retry `delay` seconds from now (with `waiting`,
    counting the wait for the provider from its first failure); False if the claim was
    no longer this one's. The batch is due a little before its retry message arrives,
    so that the message is never turned away as early."""
    changes = {"waiting_since": Coalesce("waiting_since", Now())} if waiting else {}
    return bool(Batch.objects.filter(pk=batch.pk, status=Batch.Status.SENDING, attempts=batch.attempts).update(
        status=Batch.Status.PENDING, lease_expires_at=None, claimed_by="", last_error=error[:2000],
        next_attempt_at=Now() + timedelta(seconds=delay * 0.9),
        timeouts_after_send=F("timeouts_after_send") + (1 if timed_out else 0), **changes,
    ))


# --- Recipients ------------------------------------------------------------------------

def unsuppressed_in_range(members_sql: str, params: tuple, first: int, last: int) -> list[tuple[int, str]]:
    """(id, email) of the members of `members_sql` (which selects pk, email and
    email_hmac) with ids in [first, last] and no active suppression, in id order.

    Raw for the plan: `OFFSET 0` keeps the suppression filter a per-row probe of its
    index. As a join, PostgreSQL would hash the whole active suppression list for every
    batch of 1,000, which costs more once the list has a few thousand entries, and a
    newsroom's list only grows.
    """
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT pk, email FROM ({members_sql}) AS audience WHERE pk BETWEEN %s AND %s"
            f" AND NOT EXISTS (SELECT 1 FROM {SUPPRESSION} AS s"
            "  WHERE s.email_hmac = audience.email_hmac AND s.lifted_at IS NULL OFFSET 0)"
            " ORDER BY pk",
            [*params, first, last],
        )
        return cursor.fetchall()


def unsuppressed_in_range_portable(members: models.QuerySet[Subscriber], first: int, last: int
                                   ) -> list[tuple[int, str]]:
    """unsuppressed_in_range's twin, on the members' queryset."""
    return list(members.unsuppressed().filter(pk__gte=first, pk__lte=last)
                .order_by("pk").values_list("pk", "email"))


# --- Recording a batch -----------------------------------------------------------------

def _insert(batch: Batch, rows: list[Outcome], now: datetime, shared_id: str) -> tuple[str, list]:
    """One INSERT of the batch's ledger rows. Rows of one provider call share status
    and message id, so usually there is one outcome and one id array; per-message
    sends (SMTP) carry parallel arrays instead. A message id equal to `shared_id` (the
    whole call's, kept once on the batch) is left off the rows."""
    outcomes: dict[tuple[str, str, str], list[int]] = {}
    for sid, status, message_id, error in rows:
        outcomes.setdefault((status, "" if message_id == shared_id else message_id, error), []).append(sid)
    head = (f"INSERT INTO {DELIVERY}"
            " (alert_id, batch_id, sent_at, digest_key, subscriber_id, status, message_id, error) ")
    if len(outcomes) > 3:
        ids, statuses, message_ids, errors = (list(c) for c in zip(*rows, strict=True))
        message_ids = ["" if message_id == shared_id else message_id for message_id in message_ids]
        return (head + "SELECT %s::bigint, %s::bigint, %s::timestamptz, '', *"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])",
                [batch.alert_id, batch.pk, now, bigint_array(ids), text_array(statuses), text_array(message_ids),
                 text_array(errors)])
    selects, params = [], []
    for (status, message_id, error), ids in outcomes.items():
        selects.append("SELECT %s::bigint, %s::bigint, %s::timestamptz, '', unnest(%s::bigint[]), %s, %s, %s")
        params += [batch.alert_id, batch.pk, now, bigint_array(ids), status, message_id, error]
    return head + " UNION ALL ".join(selects), params


def record(batch: Batch, rows: list[Outcome], now: datetime, shared_id: str = "") -> None:
    """Write an alert batch's ledger rows in one statement; a row an earlier attempt
    already wrote stays as it was (ON CONFLICT against the unique (alert, subscriber)).

    Raw because `INSERT … SELECT unnest()` with one array per outcome writes a
    thousand rows for the price of one parameter; bulk_create sends a placeholder per
    column per row (and COPY measured slower here).
    """
    if rows:
        insert, params = _insert(batch, rows, now, shared_id)
        with db.cursor() as cursor:
            cursor.execute(f"{insert} ON CONFLICT (alert_id, subscriber_id) DO NOTHING", params)


def record_portable(batch: Batch, rows: list[Outcome], now: datetime, shared_id: str = "") -> None:
    """record's twin."""
    Delivery.objects.bulk_create(_deliveries(batch, rows, now, shared_id), ignore_conflicts=True)


def _deliveries(batch: Batch, rows: list[Outcome], now: datetime, shared_id: str) -> list[Delivery]:
    return [Delivery(alert_id=batch.alert_id, batch_id=batch.pk, sent_at=now, subscriber_id=sid, status=status,
                     message_id="" if message_id == shared_id else message_id, error=error)
            for sid, status, message_id, error in rows]


class Totals(NamedTuple):
    """A batch's outcome as it is closed."""

    status: str  # a Batch.Status
    sent: int
    failed: int
    skipped: int
    message_id: str = ""  # the provider's id for the whole call, if it gave one (left off the rows)
    error: str = ""
    provider: str = ""  # who sent it (provider.provider_label), "" if nobody did


def close_first_attempt(batch: Batch, totals: Totals, rows: list[Outcome], now: datetime) -> None:
    """Close an alert batch on its first attempt: its ledger rows, its outcome and the
    alert's hand-off times in one statement, atomic on its own.

    Raw because it is one round trip instead of three, and because nothing of the
    batch's range can be in the ledger yet, so the rows go in without an ON CONFLICT
    check. Should a row exist all the same (ranges overlapping after a concurrent
    re-cut), the statement fails whole with IntegrityError and the caller records the
    batch through the conflict-tolerant path instead.
    """
    insert, params = _insert(batch, rows, now, totals.message_id)
    sql = (
        f"WITH ledger AS ({insert}), closed AS ("
        f"  UPDATE {BATCH} SET status = %s, sent_count = %s, failed_count = %s,"
        "  skipped_count = %s, sent_at = %s, lease_expires_at = NULL, message_id = %s, provider = %s,"
        "  last_error = CASE WHEN %s = '' THEN last_error ELSE %s END, claimed_by = '',"
        "  waiting_since = NULL, next_attempt_at = NULL WHERE id = %s AND attempts = %s AND status = %s"
        f") UPDATE {ALERT} SET first_handoff_at = COALESCE(first_handoff_at, %s),"
        "  last_handoff_at = GREATEST(COALESCE(last_handoff_at, %s), %s) WHERE id = %s AND %s"
    )
    error = totals.error[:2000]
    params += [totals.status, totals.sent, totals.failed, totals.skipped,
               now if totals.status == Batch.Status.SENT else None, totals.message_id, totals.provider,
               error, error,
               batch.pk, batch.attempts, Batch.Status.SENDING, now, now, now, batch.alert_id, totals.sent > 0]
    # Alone, the statement is its own transaction; inside one (a caller's atomic block)
    # it gets a savepoint, so that a failure leaves the outer transaction usable.
    with transaction.atomic() if db.in_atomic_block else nullcontext(), db.cursor() as cursor:
        cursor.execute(sql, params)


def close_first_attempt_portable(batch: Batch, totals: Totals, rows: list[Outcome], now: datetime) -> None:
    """close_first_attempt's twin: the same three writes in one transaction."""
    with transaction.atomic():
        Delivery.objects.bulk_create(_deliveries(batch, rows, now, totals.message_id))
        save_totals(batch, totals, now)
        if totals.sent:
            mark_handoff(batch.alert_id, now)


def save_totals(batch: Batch, totals: Totals, now: datetime) -> bool:
    """Write a batch's outcome and end its lease (an earlier error is kept unless a
    new one replaces it). Fenced: only while the batch still carries the claim that
    `batch` was taken with; False if another worker has taken it over since."""
    return bool(Batch.objects.filter(pk=batch.pk, attempts=batch.attempts, status=Batch.Status.SENDING).update(
        claimed_by="", waiting_since=None, next_attempt_at=None,
        status=totals.status, sent_count=totals.sent, failed_count=totals.failed,
        skipped_count=totals.skipped, sent_at=now if totals.status == Batch.Status.SENT else None,
        lease_expires_at=None, last_error=totals.error[:2000] if totals.error else F("last_error"),
        message_id=totals.message_id or F("message_id"), provider=totals.provider or F("provider"),
    ))


def mark_handoff(alert_id: int | None, now: datetime) -> None:
    """The alert's first and last hand-off to the provider, moved on to `now`."""
    if alert_id:
        Alert.objects.filter(pk=alert_id).update(
            first_handoff_at=Coalesce("first_handoff_at", now),
            last_handoff_at=Greatest(Coalesce("last_handoff_at", now), now),
        )


def counted(batch: Batch) -> dict[str, int]:
    """The batch's ledger rows counted by outcome: sent, failed, skipped."""
    return Delivery.objects.of_batch(batch).aggregate(
        sent=Count("pk", filter=~Q(status__in=NOT_SENT)),
        failed=Count("pk", filter=Q(status=Delivery.Status.FAILED)),
        skipped=Count("pk", filter=Q(status=Delivery.Status.SKIPPED)),
    )


# --- Finishing an alert ----------------------------------------------------------------

def finish_alert(alert_id: int, now: datetime) -> bool:
    """Mark a sending alert finished if it is fully cut and no batch of it is open:
    FAILED if every batch failed, else SENT. True if this call finished it.

    Raw because every batch asks as it closes, so it is one statement rather than a
    round trip per question (the open-batch probe is one partial-index lookup).
    """
    with db.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ALERT} SET finished_at = %s, status = CASE"
            f"  WHEN EXISTS (SELECT 1 FROM {BATCH} WHERE alert_id = %s)"
            f"   AND NOT EXISTS (SELECT 1 FROM {BATCH} WHERE alert_id = %s AND status <> %s)"
            "  THEN %s ELSE %s END"
            " WHERE id = %s AND status = %s AND fanned_out_at IS NOT NULL AND NOT EXISTS ("
            f"  SELECT 1 FROM {BATCH} WHERE alert_id = %s AND status IN (%s, %s))",
            [now, alert_id, alert_id, Batch.Status.FAILED, Alert.Status.FAILED,
             Alert.Status.SENT, alert_id, Alert.Status.SENDING, alert_id, Batch.Status.PENDING,
             Batch.Status.SENDING],
        )
        return cursor.rowcount > 0


def finish_alert_portable(alert_id: int, now: datetime) -> bool:
    """finish_alert's twin, the ORM's reading of it: the same questions, one query
    each. finish_alert's SQL is portable, so SQLite runs it too."""
    batches = Batch.objects.filter(alert_id=alert_id)
    if batches.filter(status__in=[Batch.Status.PENDING, Batch.Status.SENDING]).exists():
        return False
    failed = batches.exists() and not batches.exclude(status=Batch.Status.FAILED).exists()
    return bool(Alert.objects.filter(pk=alert_id, status=Alert.Status.SENDING, fanned_out_at__isnull=False)
                .update(finished_at=now, status=Alert.Status.FAILED if failed else Alert.Status.SENT))


# --- Digest rows -----------------------------------------------------------------------

def reserve_digest_rows(members_sql: str, params: tuple, *, digest_key: str, run_id: int,
                        batch_id: int) -> None:
    """Reserve one PENDING ledger row for each member of `members_sql` (which selects
    `sid`), under the unique (subscriber, digest_key): a subscriber another run
    reserved first is left to it.

    Raw because `INSERT … SELECT … ON CONFLICT DO NOTHING` reserves a batch's readers
    in one statement without their ids leaving the database; the ORM has no INSERT
    from a query.
    """
    with db.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DELIVERY} (subscriber_id, digest_key, digest_run_id, batch_id,"
            " status, message_id, error) SELECT s.sid, %s, %s, %s, %s, '', ''"
            f" FROM ({members_sql}) AS s ON CONFLICT DO NOTHING",
            [digest_key, run_id, batch_id, Delivery.Status.PENDING, *params],
        )


def reserve_digest_rows_portable(members: models.QuerySet[Subscriber], *, digest_key: str, run_id: int,
                                 batch_id: int) -> None:
    """reserve_digest_rows's twin: the members' ids read out, then one bulk insert."""
    Delivery.objects.bulk_create(
        [Delivery(subscriber_id=sid, digest_key=digest_key, digest_run_id=run_id, batch_id=batch_id,
                  status=Delivery.Status.PENDING) for sid in members.values_list("pk", flat=True)],
        ignore_conflicts=True,
    )


def update_ids(model: type[models.Model], ids: list[int], *, key: str = "id",
               where: dict | None = None, **values) -> None:
    """UPDATE the rows of `model` whose `key` is in `ids` (and that match `where`).

    Raw because one array parameter (`= ANY`) plans and binds in a fraction of the
    time of the thousand-placeholder IN list the ORM would send.
    """
    if not ids:
        return
    where = where or {}
    sets = ", ".join(f"{column} = %s" for column in values)
    conditions = "".join(f" AND {column} = %s" for column in where)
    with db.cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET {sets} WHERE {key} = ANY(%s::bigint[]){conditions}",
            [*values.values(), bigint_array(ids), *where.values()],
        )


def update_ids_portable(model: type[models.Model], ids: list[int], *, key: str = "id",
                        where: dict | None = None, **values) -> None:
    """update_ids's twin."""
    if ids:
        model.objects.filter(**{f"{key}__in": ids}, **(where or {})).update(**values)
