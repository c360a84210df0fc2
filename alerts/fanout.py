"""The fan-out: from a published alert to provider calls, every eligible subscriber once.

1. `alert_fan_out` walks the audience in SQL, in primary-key order, and cuts it into
   Batch rows of what the provider accepts in one API call. Each batch is a range of
   subscriber ids [first, last]; nothing is loaded whole.
2. `batch_send` claims one batch with a conditional update and a lease, selects the
   recipients of its range who are *still* eligible (so an unsubscribe mid-send takes
   effect), makes one provider call, and writes the ledger (one Delivery row per
   recipient) in one set-based statement.

Duplicates are bounded: a batch is only re-sent if its worker died after the provider
accepted it and before the ledger was written, i.e. at most the batch in flight.
"""

from __future__ import annotations

import logging
import random
import smtplib
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import get_connection
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from .anymail_batch import BatchMessage, backend_class
from .emails import RenderedAlert, alert_rendering, personalise, personalised_copy, subscriber_links
from .models import Alert, Batch, Delivery, Subscriber, Suppression
from .queueing import enqueue_on_commit
from .tokens import link_tokens

logger = logging.getLogger(__name__)

# Recipients per provider API call: each provider's documented batch limit. Anymail
# never splits a list, so a batch is exactly one call. Plain SMTP sends one message per
# recipient over one connection per batch; 500 keeps a batch well inside the lease.
BATCH_SIZES = {"Mailgun": 1000, "SendGrid": 1000, "Postmark": 500, "Mandrill": 1000,
               "Mailjet": 50, "Amazon SES": 50}
DEFAULT_BATCH_SIZE = 500
# How each provider spells a per-recipient merge field in a body. Providers not listed
# get one API call per recipient, which is correct but slow.
MERGE_FIELDS = {"Mailgun": "%recipient.{}%", "Mailjet": "[[var:{}]]", "Mandrill": "*|{}|*"}

MAX_ATTEMPTS = 5
MAX_RETRY_DELAY = 300  # seconds; under half the broker's visibility timeout


class RetryLater(Exception):
    """Transient failure (or batch leased elsewhere): run the task again later."""

    def __init__(self, countdown: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {countdown:.1f}s")
        self.countdown = countdown


@dataclass(frozen=True)
class SendingProfile:
    backend_path: str
    esp_name: str | None
    batch_size: int
    merge_field: str | None


def sending_profile() -> SendingProfile:
    """What the configured EMAIL_BACKEND can do in one call."""
    path = settings.EMAIL_BACKEND
    esp_name = getattr(backend_class(path), "esp_name", None)
    if not isinstance(esp_name, str):
        esp_name = None
    size = settings.FANOUT_BATCH_SIZE or BATCH_SIZES.get(esp_name, DEFAULT_BATCH_SIZE)
    return SendingProfile(path, esp_name, size, MERGE_FIELDS.get(esp_name))


# --- Audience -------------------------------------------------------------------------

def audience(alert: Alert) -> QuerySet[Subscriber]:
    """Subscribers an alert goes to as it happens: confirmed before it was published,
    taking alerts as they happen, not suppressed, and following one of its topics (a
    subscriber with no topics follows them all)."""
    return unsuppressed(audience_before_suppression(alert))


def audience_before_suppression(alert: Alert) -> QuerySet[Subscriber]:
    """The audience but for the suppression list, which the cut joins on its own."""
    subscribers = Subscriber.objects.filter(
        status=Subscriber.Status.CONFIRMED,
        frequency=Subscriber.Frequency.IMMEDIATE,
        confirmed_at__lte=alert.published_at,
    )
    topic_ids = _topic_ids(alert)
    if topic_ids:
        follows = Subscriber.topics.through.objects.filter(subscriber_id=OuterRef("pk"))
        subscribers = subscribers.filter(
            ~Exists(follows) | Exists(follows.filter(topic_id__in=topic_ids))
        )
    return subscribers


def unsuppressed(subscribers: QuerySet[Subscriber]) -> QuerySet[Subscriber]:
    """Those of `subscribers` whose address has no active suppression."""
    return subscribers.filter(
        ~Exists(Suppression.objects.filter(email_hmac=OuterRef("email_hmac"), lifted_at__isnull=True)))


_topics_cache: dict[tuple[int, object], list[int]] = {}


def _topic_ids(alert: Alert) -> list[int]:
    """The alert's topics, read once per worker process rather than once per batch (a
    published alert can no longer be edited; updated_at keys out any earlier edit)."""
    if alert.pk is None:
        return []
    if alert.status in (Alert.Status.DRAFT, Alert.Status.SCHEDULED):
        return list(alert.topics.values_list("id", flat=True))  # still editable
    key = (alert.pk, alert.updated_at)
    if key not in _topics_cache:
        if len(_topics_cache) > 100:
            _topics_cache.clear()
        _topics_cache[key] = list(alert.topics.values_list("id", flat=True))
    return _topics_cache[key]


def audience_count(alert: Alert) -> int:
    """How many would receive the alert if it were published now (for the editor)."""
    probe = Alert(pk=alert.pk, published_at=timezone.now(), status=alert.status)
    return audience(probe).count() if alert.pk else 0


# --- Fan-out --------------------------------------------------------------------------

def alert_fan_out(*, alert_id: int) -> int:
    """Cut the alert's audience into batches and enqueue one send task per batch.

    Returns the number of batches cut by this run. Safe to run twice or to resume after
    a crash: it continues after the highest range already cut, and a range cut twice
    meets the unique (alert, first_subscriber_id) constraint and is ignored.
    """
    alert = Alert.objects.filter(pk=alert_id, status=Alert.Status.SENDING).first()
    if alert is None or alert.fanned_out_at:
        return 0
    size = sending_profile().batch_size
    start = alert.batches.aggregate(m=Max("last_subscriber_id"))["m"] or 0
    members = audience(alert).filter(pk__gt=start).order_by("pk").values_list("pk", flat=True)
    # The first batch is cut and queued before the rest of the audience is walked, so
    # the first hand-off does not wait for a million-row scan.
    first = list(members[:size])
    cut = 0
    if first:
        owner = {"alert": alert}
        cut += create_batches(owner, [(first[0], first[-1], len(first))], send_batch_task())
        rest = ranges_after(audience_before_suppression(alert), first[-1], size, join_suppressions=True)
        cut += create_batches(owner, rest, send_batch_task())
    Alert.objects.filter(pk=alert_id).update(
        fanned_out_at=timezone.now(), audience_size=_planned_total(alert_id)
    )
    logger.info("Alert %s: cut %d batches of up to %d", alert_id, cut, size)
    alert_finish_if_done(alert_id=alert_id)
    return cut


def send_batch_task():
    from .tasks import send_batch

    return send_batch


# Batches cut per database round trip: enough to keep workers busy while the walk goes
# on, small enough that the first of them are queued within milliseconds.
RANGES_PER_STEP = 50


def ranges_after(members: QuerySet[Subscriber], after: int, size: int, *,
                 join_suppressions: bool = False):
    """Yield (first_id, last_id, count) for consecutive runs of `size` subscribers of
    `members` with ids above `after`. Walks the index in id order, RANGES_PER_STEP
    batches' worth of rows per query (keyset: each step starts after the last id the
    one before read), so batches are queued while the rest of a million-row audience is
    still being walked; a batch may span two steps. Only one id per batch leaves the
    database.

    With `join_suppressions`, `members` leaves out the suppression list's filter and
    each step applies it with one hash join. As a per-row NOT EXISTS under the step's
    LIMIT, PostgreSQL would probe the suppression index once per subscriber: two
    thirds of a step's time.
    """
    if join_suppressions and db.vendor != "postgresql":
        members, join_suppressions = unsuppressed(members), False
    rows = size * RANGES_PER_STEP
    first = last = None  # the batch being filled: its first member, the last so far
    count = 0  # and how many it has
    while True:
        step = members.filter(pk__gt=after).order_by("pk")
        if join_suppressions:
            step = step.values(sid=F("pk"), hmac=F("email_hmac"))[:rows]
        else:
            step = step.values(sid=F("pk"))[:rows]
        # Position (1-based) among this step's members of the next batch's first one.
        start = 1 if first is None else size - count + 1
        starts, found, scanned, step_last, last_read = _walk_step(
            *step.query.sql_with_params(), start, size, join_suppressions)
        for first_id in starts:
            if first is not None:
                yield first, first_id - 1, size
            first = first_id
        if found:
            count = found - (start + (len(starts) - 1) * size) + 1 if starts else count + found
            last = step_last
        if scanned < rows:
            break
        after = last_read
    if first is not None:
        yield first, last, count


def _walk_step(sql: str, params: tuple, start: int, size: int, join_suppressions: bool
               ) -> tuple[list[int], int, int, int | None, int | None]:
    """One step of the walk over the id query `sql`: the ids of its members at
    positions start, start + size, ...; how many members it found; how many rows it
    read; its last member's id; the last id it read."""
    if db.vendor != "postgresql":
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
                return [], total, total, last_id, last_id
        total, last_id = rows[0][2], rows[0][3]
        return [sid for sid, _, _, _ in rows], total, total, last_id, last_id
    members, join = "array_agg(a.sid ORDER BY a.sid)", ""
    if join_suppressions:
        # An address has at most one active suppression, so the join adds no rows.
        members += " FILTER (WHERE s.email_hmac IS NULL)"
        join = " LEFT JOIN alerts_suppression AS s ON s.email_hmac = a.hmac AND s.lifted_at IS NULL"
    query = (  # one array per step, cheaper than numbering its rows with window functions
        "SELECT ids[i], cardinality(ids), scanned, ids[cardinality(ids)], last_read"
        f" FROM (SELECT {members} AS ids, count(*) AS scanned, max(a.sid) AS last_read"
        f"       FROM ({sql}) AS a{join}) AS step"
        " LEFT JOIN generate_series(%s, cardinality(ids), %s) AS i ON true ORDER BY i"
    )
    with transaction.atomic(), db.cursor() as cursor:
        # A parallel plan would take the cores the sending workers need, for a scan
        # that stops after RANGES_PER_STEP batches anyway.
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(query, [*params, start, size])
        rows = cursor.fetchall()
    _, found, scanned, step_last, last_read = rows[0]
    return [row[0] for row in rows if row[0] is not None], found or 0, scanned, step_last, last_read


def create_batches(owner: dict, ranges, task, chunk: int = RANGES_PER_STEP, prepare=None) -> int:
    """Write Batch rows for `ranges` under `owner` ({"alert": a} or {"digest_run": r})
    in chunks, queueing `task` for each after its chunk commits. `prepare(batches)`
    runs inside the chunk's transaction (digests reserve their ledger rows there)."""
    created = 0
    pending: list[Batch] = []

    def flush() -> None:
        nonlocal created
        with transaction.atomic():
            Batch.objects.bulk_create(pending, ignore_conflicts=True)
            batches = list(Batch.objects.filter(
                **owner, first_subscriber_id__in=[b.first_subscriber_id for b in pending],
                status=Batch.Status.PENDING,
            ))
            if prepare is not None:
                prepare(batches)
            for batch in batches:
                enqueue_on_commit(task, batch_id=batch.pk)
        created += len(pending)
        pending.clear()

    for first_id, last_id, count in ranges:
        pending.append(Batch(**owner, first_subscriber_id=first_id,
                             last_subscriber_id=last_id, planned_count=count))
        # The very first batch goes alone, so its send starts before the rest are cut.
        if len(pending) >= chunk or created == 0:
            flush()
    if pending:
        flush()
    return created


def _planned_total(alert_id: int) -> int:
    return Batch.objects.filter(alert_id=alert_id).aggregate(n=Sum("planned_count"))["n"] or 0


# --- Sending one batch ----------------------------------------------------------------

def batch_send(*, batch_id: int) -> str:
    """Send one batch in one provider call and record every recipient in the ledger.

    Returns the batch's resulting status. Safe to run twice: the claim lets one run
    through; a re-run after the batch was sent does nothing. Raises RetryLater for
    transient provider errors (after releasing the claim) and when another worker holds
    the batch's lease, so a redelivered task waits for the lease rather than vanishing.
    """
    batch = claim_batch(batch_id)
    if isinstance(batch, str):
        return batch
    alert = _published_alert(batch)
    if batch.alert_status == Alert.Status.CANCELLED:
        return close_batch(batch, Batch.Status.CANCELLED)
    if batch.attempts > MAX_ATTEMPTS:
        return close_batch(batch, Batch.Status.FAILED, error=f"Gave up after {MAX_ATTEMPTS} attempts: {batch.last_error}")
    recipients = _recipients(batch, alert)
    try:
        results = deliver(alert, recipients)
    except TransientSendError as error:
        _record(batch, error.partial_results)
        release_batch(batch, str(error))
        raise RetryLater(retry_delay(batch.attempts, error.retry_after), str(error)) from error
    except PermanentSendError as error:
        failed = [(sid, Delivery.Status.FAILED, "", str(error)[:400]) for sid, _ in recipients]
        return close_batch(batch, Batch.Status.FAILED, error=str(error), results=failed)
    return close_batch(batch, Batch.Status.SENT, skipped=batch.planned_count - len(recipients),
                       results=results)


def claim_batch(batch_id: int) -> Batch | str:
    """Take the batch for this worker: the claimed Batch, or (a string) why not."""
    now = timezone.now()
    # One conditional UPDATE ... RETURNING: the claim, the batch and what the send
    # needs to know of its alert now, in one round trip.
    claimed = list(Batch.objects.raw(
        "UPDATE alerts_batch SET status = %s, attempts = attempts + 1, lease_expires_at = %s"
        " WHERE id = %s AND (status = %s OR (status = %s AND lease_expires_at < %s))"
        " RETURNING *, (SELECT status FROM alerts_alert WHERE id = alert_id) AS alert_status,"
        " (SELECT updated_at FROM alerts_alert WHERE id = alert_id) AS alert_updated_at",
        [Batch.Status.SENDING, now + timedelta(seconds=settings.BATCH_LEASE_SECONDS), batch_id,
         Batch.Status.PENDING, Batch.Status.SENDING, now],
    ))
    if claimed:
        return claimed[0]
    row = Batch.objects.filter(pk=batch_id).values("status", "lease_expires_at").first()
    if row and row["status"] == Batch.Status.SENDING:
        wait = (row["lease_expires_at"] - now).total_seconds() + random.uniform(0.5, 2)
        raise RetryLater(min(max(wait, 1), MAX_RETRY_DELAY), "batch leased by another worker")
    return row["status"] if row else "missing"


_alerts_cache: dict[tuple[int, object], Alert] = {}


def _published_alert(batch: Batch) -> Alert:
    """The batch's alert, read once per worker process rather than once per batch. A
    published alert's content, publication time and topics no longer change, and an
    edit would change updated_at; its status is read fresh with every claim."""
    key = (batch.alert_id, batch.alert_updated_at)
    if key not in _alerts_cache:
        if len(_alerts_cache) > 20:
            _alerts_cache.clear()
        _alerts_cache[key] = Alert.objects.get(pk=batch.alert_id)
    return _alerts_cache[key]


_audience_sql_cache: dict[tuple, tuple[str, tuple]] = {}


def _audience_sql(alert: Alert) -> tuple[str, tuple]:
    """The alert's audience as SQL, compiled once per worker process: compiling the
    queryset costs three times running it. Each batch selects its id range from it
    (PostgreSQL pushes the range into the subquery: the plan is the same)."""
    key = (alert.pk, alert.updated_at, alert.published_at)
    if key not in _audience_sql_cache:
        if len(_audience_sql_cache) > 20:
            _audience_sql_cache.clear()
        members = audience_before_suppression(alert).order_by().values_list("pk", "email", "email_hmac")
        _audience_sql_cache[key] = members.query.sql_with_params()
    return _audience_sql_cache[key]


# The suppression filter of a batch's query. OFFSET 0 keeps it a per-row probe of the
# suppression index: as a join, PostgreSQL would hash the whole active suppression list
# for every batch of 1,000, which costs more once the list has a few thousand entries
# (and a newsroom's list only grows).
_UNSUPPRESSED = ("NOT EXISTS (SELECT 1 FROM alerts_suppression AS s"
                 " WHERE s.email_hmac = audience.email_hmac AND s.lifted_at IS NULL OFFSET 0)")


def _recipients(batch: Batch, alert: Alert) -> list[tuple[int, str]]:
    """Still-eligible subscribers of the batch's range not yet in the ledger."""
    if batch.attempts == 1 and db.vendor == "postgresql":
        sql, params = _audience_sql(alert)
        with db.cursor() as cursor:
            cursor.execute(f"SELECT pk, email FROM ({sql}) AS audience WHERE pk BETWEEN %s AND %s"
                           f" AND {_UNSUPPRESSED} ORDER BY pk",
                           [*params, batch.first_subscriber_id, batch.last_subscriber_id])
            return cursor.fetchall()
    members = audience(alert).filter(
        pk__gte=batch.first_subscriber_id, pk__lte=batch.last_subscriber_id)
    if batch.attempts > 1:
        # Only an earlier attempt of this batch can have written ledger rows for its
        # range (ranges do not overlap), so the first attempt skips the anti-join.
        already = Delivery.objects.filter(alert_id=batch.alert_id, subscriber_id=OuterRef("pk"))
        members = members.filter(~Exists(already))
    return list(members.order_by("pk").values_list("pk", "email"))


def retry_delay(attempts: int, retry_after: float | None) -> float:
    backoff = min(2 ** attempts, 60) * random.uniform(0.5, 1.5)  # jitter spreads a thundering herd
    return min(max(backoff, retry_after or 0), MAX_RETRY_DELAY)


def release_batch(batch: Batch, error: str) -> None:
    Batch.objects.filter(pk=batch.pk, status=Batch.Status.SENDING).update(
        status=Batch.Status.PENDING, lease_expires_at=None, last_error=error[:2000])


NOT_SENT = (Delivery.Status.FAILED, Delivery.Status.PENDING, Delivery.Status.SKIPPED)


def close_batch(batch: Batch, status: str, *, error: str = "", skipped: int = 0,
                results: list[tuple[int, str, str, str]] | None = None) -> str:
    """Write the batch's ledger rows (`results`) and its outcome and totals in one
    transaction; then finish its alert or digest run if it was the last open batch."""
    if results and batch.attempts == 1 and batch.alert_id and db.vendor == "postgresql":
        try:
            _close_first_attempt(batch, status, error=error, skipped=skipped, results=results)
        except IntegrityError:
            logger.warning("Batch %s: ledger rows already present; recording with a conflict check", batch.pk)
        else:
            alert_finish_if_done(alert_id=batch.alert_id)
            return status
    now = timezone.now()
    batch_message_id, results = _shared_message_id(results) if results else ("", results)
    with transaction.atomic():
        if results:
            _record(batch, results)
        if results is not None and batch.attempts == 1 and not batch.digest_run_id:
            # First attempt: this call's results are all the batch's rows.
            sent = sum(1 for _, state, _, _ in results if state not in NOT_SENT)
            failed = sum(1 for _, state, _, _ in results if state == Delivery.Status.FAILED)
        else:
            counts = Delivery.objects.of_batch(batch).aggregate(
                sent=Count("pk", filter=~Q(status__in=NOT_SENT)),
                failed=Count("pk", filter=Q(status=Delivery.Status.FAILED)),
                skipped=Count("pk", filter=Q(status=Delivery.Status.SKIPPED)),
            )
            sent, failed = counts["sent"], counts["failed"]
            if batch.digest_run_id:
                skipped += counts["skipped"]
            elif status == Batch.Status.SENT:
                # Rows written by earlier attempts are in `sent`; whoever is left out
                # of the range was unsubscribed or suppressed since publication.
                skipped = batch.planned_count - sent - failed
        Batch.objects.filter(pk=batch.pk).update(
            status=status, sent_count=sent, failed_count=failed, skipped_count=max(skipped, 0),
            sent_at=now if status == Batch.Status.SENT else None, lease_expires_at=None,
            last_error=error[:2000] if error else F("last_error"),
            message_id=batch_message_id or F("message_id"),
        )
        if sent and batch.alert_id:
            Alert.objects.filter(pk=batch.alert_id).update(
                first_handoff_at=Coalesce("first_handoff_at", now),
                last_handoff_at=Greatest(Coalesce("last_handoff_at", now), now),
            )
    # Outside the transaction, so that of two batches finishing together the later one
    # sees the other's commit (the sweeper catches any that both miss).
    if batch.digest_run_id:
        from .digests import digest_run_finish_if_done

        digest_run_finish_if_done(run_id=batch.digest_run_id)
        return status
    alert_finish_if_done(alert_id=batch.alert_id)
    return status


def _close_first_attempt(batch: Batch, status: str, *, error: str, skipped: int,
                         results: list[tuple[int, str, str, str]]) -> None:
    """close_batch for the common case, a batch's first attempt at an alert: the
    ledger rows, the batch's outcome and the alert's hand-off times in one statement
    (one round trip, atomic on its own). Nothing can be in the ledger for the batch
    yet, so the rows are inserted without an ON CONFLICT check; should a row exist all
    the same (ranges overlapping after a concurrent re-cut), the statement fails as a
    whole with IntegrityError, and close_batch's general path, which tolerates it,
    runs instead."""
    now = timezone.now()
    batch_message_id, rows = _shared_message_id(results)
    sent = sum(1 for _, state, _, _ in rows if state not in NOT_SENT)
    failed = sum(1 for _, state, _, _ in rows if state == Delivery.Status.FAILED)
    insert, params = _ledger_insert(batch, rows, now)
    sql = (
        f"WITH ledger AS ({insert}), closed AS ("
        "  UPDATE alerts_batch SET status = %s, sent_count = %s, failed_count = %s,"
        "  skipped_count = %s, sent_at = %s, lease_expires_at = NULL, message_id = %s,"
        "  last_error = CASE WHEN %s = '' THEN last_error ELSE %s END WHERE id = %s"
        ") UPDATE alerts_alert SET first_handoff_at = COALESCE(first_handoff_at, %s),"
        "  last_handoff_at = GREATEST(COALESCE(last_handoff_at, %s), %s) WHERE id = %s AND %s"
    )
    params += [status, sent, failed, max(skipped, 0), now if status == Batch.Status.SENT else None,
               batch_message_id, error[:2000], error[:2000], batch.pk, now, now, now, batch.alert_id, sent > 0]
    # Alone, the statement is its own transaction; inside one (a caller's atomic block)
    # it gets a savepoint, so that a failure leaves the outer transaction usable.
    with transaction.atomic() if db.in_atomic_block else nullcontext(), db.cursor() as cursor:
        cursor.execute(sql, params)


def bigint_array(ids: list[int]) -> str:
    """A PostgreSQL bigint[] literal, for `%s::bigint[]`. Django's psycopg cursor binds
    parameters client-side, and adapting a list of a thousand ints there costs ten
    times the join (about 1.3 ms a batch)."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def _shared_message_id(results: list[tuple[int, str, str, str]]) -> tuple[str, list]:
    """One provider call gives all its recipients one message id (Mailgun): keep it
    once, on the batch, and leave the rows' own column empty."""
    ids = {message_id for _, _, message_id, _ in results}
    if len(ids) == 1 and len(results) > 1:
        shared = ids.pop()
        return shared, [(sid, state, "", reason) for sid, state, _, reason in results]
    return "", results


def _ledger_insert(batch: Batch, results: list[tuple[int, str, str, str]], now) -> tuple[str, list]:
    """One INSERT of the batch's ledger rows (PostgreSQL). Rows of one provider call
    share status and message id, so usually there is one outcome and one id array;
    per-message sends (SMTP) carry parallel arrays instead."""
    outcomes: dict[tuple[str, str, str], list[int]] = {}
    for sid, status, message_id, error in results:
        outcomes.setdefault((status, message_id, error), []).append(sid)
    head = ("INSERT INTO alerts_delivery"
            " (alert_id, batch_id, sent_at, digest_key, subscriber_id, status, message_id, error) ")
    if len(outcomes) > 3:
        ids, statuses, message_ids, errors = (list(c) for c in zip(*results, strict=True))
        return (head + "SELECT %s::bigint, %s::bigint, %s::timestamptz, '', *"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])",
                [batch.alert_id, batch.pk, now, bigint_array(ids), statuses, message_ids, errors])
    selects, params = [], []
    for (status, message_id, error), ids in outcomes.items():
        selects.append("SELECT %s::bigint, %s::bigint, %s::timestamptz, '', unnest(%s::bigint[]), %s, %s, %s")
        params += [batch.alert_id, batch.pk, now, bigint_array(ids), status, message_id, error]
    return head + " UNION ALL ".join(selects), params


def _record(batch: Batch, results: list[tuple[int, str, str, str]]) -> None:
    """Write ledger rows for one batch in one statement (ON CONFLICT: a row already
    written by an earlier attempt stays as it was)."""
    if not results:
        return
    now = timezone.now()
    if db.vendor == "postgresql":
        insert, params = _ledger_insert(batch, results, now)
        with db.cursor() as cursor:
            cursor.execute(f"{insert} ON CONFLICT (alert_id, subscriber_id) DO NOTHING", params)
        return
    Delivery.objects.bulk_create(
        [Delivery(alert_id=batch.alert_id, batch_id=batch.pk, sent_at=now, subscriber_id=sid,
                  status=status, message_id=message_id, error=error)
         for sid, status, message_id, error in results],
        ignore_conflicts=True,
    )


def alert_finish_if_done(*, alert_id: int) -> bool:
    """Mark a sending alert finished once it is fully cut and no batch is open: failed
    if every batch failed, else sent. Every batch runs this as it closes, so it is one
    statement rather than a round trip per question."""
    with db.cursor() as cursor:
        cursor.execute(
            "UPDATE alerts_alert SET finished_at = %s, status = CASE"
            "  WHEN EXISTS (SELECT 1 FROM alerts_batch WHERE alert_id = %s)"
            "   AND NOT EXISTS (SELECT 1 FROM alerts_batch WHERE alert_id = %s AND status <> %s)"
            "  THEN %s ELSE %s END"
            " WHERE id = %s AND status = %s AND fanned_out_at IS NOT NULL AND NOT EXISTS ("
            "  SELECT 1 FROM alerts_batch WHERE alert_id = %s AND status IN (%s, %s))",
            [timezone.now(), alert_id, alert_id, Batch.Status.FAILED, Alert.Status.FAILED,
             Alert.Status.SENT, alert_id, Alert.Status.SENDING, alert_id, Batch.Status.PENDING,
             Batch.Status.SENDING],
        )
        return cursor.rowcount > 0


# --- Talking to the provider ----------------------------------------------------------

class TransientSendError(Exception):
    """Worth retrying: rate limits, provider 5xx, timeouts, network errors."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 partial_results: list | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.partial_results = partial_results or []


class PermanentSendError(Exception):
    """Not worth retrying: the provider refused the request itself (bad key, bad data)."""


_render_cache: dict[tuple[int, object], RenderedAlert] = {}


def cached_rendering(alert: Alert) -> RenderedAlert:
    """Render each alert once per worker process, not once per batch."""
    key = (alert.pk, alert.updated_at)
    if key not in _render_cache:
        if len(_render_cache) > 20:
            _render_cache.clear()
        _render_cache[key] = alert_rendering(alert)
    return _render_cache[key]


def deliver(alert: Alert, recipients: list[tuple[int, str]]) -> list[tuple[int, str, str, str]]:
    """Hand recipients to the provider. Returns (subscriber_id, status, message_id,
    error) per recipient; raises TransientSendError or PermanentSendError."""
    if not recipients:
        return []
    return deliver_rendered(cached_rendering(alert), recipients,
                            tag="breaking-alert", metadata={"alert_id": str(alert.pk)})


def deliver_rendered(rendered: RenderedAlert, recipients: list[tuple[int, str]], *, tag: str,
                     metadata: dict[str, str]) -> list[tuple[int, str, str, str]]:
    """Send one rendered email to every recipient, each with their own links: one API
    call where the provider personalises batches, else one message each."""
    profile = sending_profile()
    if profile.merge_field:
        return _send_merged(rendered, recipients, profile, tag=tag, metadata=metadata)
    return _send_each(rendered, recipients, profile)


# Providers that also substitute merge fields in custom headers, so List-Unsubscribe can
# be one header for the whole batch (anymail's own merge_headers for Mailgun works this
# way); elsewhere each recipient's header travels as anymail merge_headers.
HEADER_MERGE = {"Mailgun"}

_connections: dict[tuple[str, str], object] = {}


def _connection_key(path: str) -> tuple[str, str]:
    # Keyed by the provider settings too, so a changed API URL or key takes effect.
    return path, repr(sorted(settings.ANYMAIL.items()))


def _esp_connection(path: str):
    """One backend (one HTTP session, kept alive) per worker process and provider."""
    key = _connection_key(path)
    if key not in _connections:
        connection = backend_class(path)(fail_silently=False)
        connection.open()
        _connections[key] = connection
    return _connections[key]


def _drop_connection(path: str) -> None:
    connection = _connections.pop(_connection_key(path), None)
    if connection is not None:
        connection.close()


def _send_merged(rendered: RenderedAlert, recipients, profile: SendingProfile, *, tag: str,
                 metadata: dict[str, str]):
    """One API call for the whole batch; each copy gets its own links via merge data."""
    field = profile.merge_field.format("t")
    # Reversed with a plain placeholder: reverse() would percent-encode the merge field.
    links = {name: url.replace("TOKEN", field) for name, url in subscriber_links("TOKEN").items()}
    headers = {k: personalise(v, links) for k, v in rendered.headers.items()}
    make_token = link_tokens.bulk_maker()
    to = [email for _, email in recipients]
    merge_data = {email: {"t": make_token(sid)} for sid, email in recipients}
    merge_headers = None
    if profile.esp_name not in HEADER_MERGE:
        unsubscribe = headers.pop("List-Unsubscribe")
        merge_headers = {email: {"List-Unsubscribe": unsubscribe.replace(field, data["t"])}
                         for email, data in merge_data.items()}
    message = BatchMessage(
        subject=rendered.subject, body=personalise(rendered.text, links),
        from_email=settings.DEFAULT_FROM_EMAIL, to=to, headers=headers,
        connection=_esp_connection(profile.backend_path), merge_data=merge_data,
        tags=[tag], metadata=metadata,
    )
    if merge_headers:
        message.merge_headers = merge_headers
    message.attach_alternative(personalise(rendered.html, links), "text/html")
    try:
        message.send()
    except AnymailRecipientsRefused as error:
        return [(sid, Delivery.Status.FAILED, "", str(error)[:400]) for sid, _ in recipients]
    except AnymailAPIError as error:
        _drop_connection(profile.backend_path)
        raise _classify(error) from error
    return _statuses(message, recipients)


def _classify(error: AnymailAPIError) -> Exception:
    status = getattr(error, "status_code", None)
    if status is None or status == 429 or status >= 500:
        return TransientSendError(str(error)[:1000], retry_after=_retry_after(error))
    return PermanentSendError(str(error)[:1000])


def _retry_after(error: AnymailAPIError) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


REFUSED = frozenset({"rejected", "invalid", "failed"})


def _statuses(message: BatchMessage, recipients) -> list[tuple[int, str, str, str]]:
    status = message.anymail_status
    if isinstance(status.message_id, str) and not status.status & REFUSED:
        # One id and no refusals (Mailgun queues a whole call under one id): the same
        # row for everyone, without a lookup per recipient.
        sent, message_id = Delivery.Status.SENT, status.message_id
        return [(subscriber_id, sent, message_id, "") for subscriber_id, _ in recipients]
    per_recipient = status.recipients
    results = []
    for subscriber_id, email in recipients:
        recipient = per_recipient.get(email)
        refused = recipient is not None and recipient.status in REFUSED
        results.append((
            subscriber_id,
            Delivery.Status.FAILED if refused else Delivery.Status.SENT,
            (recipient.message_id or "") if recipient else "",
            recipient.status if refused else "",
        ))
    return results


def _send_each(rendered: RenderedAlert, recipients, profile: SendingProfile):
    """One message per recipient over one connection (SMTP and providers without
    batch merge). A failure part-way keeps what was already accepted."""
    make_token = link_tokens.bulk_maker()
    results: list[tuple[int, str, str, str]] = []
    connection = get_connection(profile.backend_path, fail_silently=False)
    try:
        connection.open()
        for subscriber_id, email in recipients:
            copy = personalised_copy(rendered, to=email, links=subscriber_links(make_token(subscriber_id)),
                                     connection=connection)
            try:
                copy.send()
            except (smtplib.SMTPRecipientsRefused, AnymailRecipientsRefused) as error:
                results.append((subscriber_id, Delivery.Status.FAILED, "", str(error)[:400]))
                continue
            except AnymailAPIError as error:
                classified = _classify(error)
                if isinstance(classified, TransientSendError):
                    classified.partial_results = results
                raise classified from error
            except (smtplib.SMTPException, OSError) as error:
                raise TransientSendError(str(error)[:1000], partial_results=results) from error
            message_id = _message_id(copy) or copy.extra_headers.get("Message-ID", "")
            results.append((subscriber_id, Delivery.Status.SENT, message_id, ""))
    except (smtplib.SMTPException, OSError) as error:
        raise TransientSendError(str(error)[:1000], partial_results=results) from error
    finally:
        connection.close()
    return results


def _message_id(message) -> str:
    status = getattr(message, "anymail_status", None)
    return (status.message_id or "") if status is not None and isinstance(status.message_id, str) else ""
