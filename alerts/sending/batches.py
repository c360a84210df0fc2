"""The batch engine that alerts and digests share: cut, claim, release, close.

1. `ranges_after` walks an audience in SQL, in primary-key order, and `create_batches`
   writes one Batch row per provider call's worth of it: a range of subscriber ids
   [first, last]. Nothing is loaded whole; only each batch's first id leaves the
   database.
2. A send task `claim_batch`es its batch with a conditional update and a lease, so two
   workers never send one batch, and a dead worker's batch is taken over later.
3. After the provider call, `close_batch` writes the whole batch to the ledger (one
   Delivery row per recipient) and its outcome in one transaction, fenced by the claim;
   on a transient failure, `retry_or_give_up` hands it back for a retry with backoff,
   until the batch's give-up time.

The engine does not finish anything above the batch: it returns the batch's status,
and its caller (`publishing.fanout` for an alert, `digests.send` for a digest run)
finishes its own object. Duplicates are bounded: a batch is only sent twice if its
worker died after the provider accepted it and before the ledger was written.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from ..common.queueing import enqueue, enqueue_on_commit
from ..models import Batch, Delivery, Subscriber
from . import ledger
from .ledger import NOT_SENT, Outcome, Totals
from .provider import TransientSendError

logger = logging.getLogger(__name__)

# Written on the rows of a batch sent again after a call timed out once it was sent.
MAYBE_TWICE = "sent again after a timeout: may have arrived twice"
NOT_CONFIRMED = "not confirmed: the provider timed out twice after the request was sent"
# Batches cut per database round trip: enough to keep workers busy while the walk goes
# on, small enough that the first of them are queued within milliseconds.
RANGES_PER_STEP = 50


class RetryLater(Exception):
    """Transient failure (or batch leased elsewhere): run the task again later."""

    def __init__(self, countdown: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {countdown:.1f}s")
        self.countdown = countdown


@dataclass(frozen=True)
class BatchOwner:
    """What a batch belongs to: an alert, or a digest run. Exactly one is set."""

    alert_id: int | None = None
    digest_run_id: int | None = None

    @classmethod
    def of(cls, batch: Batch) -> BatchOwner:
        return cls(alert_id=batch.alert_id, digest_run_id=batch.digest_run_id)

    def fields(self) -> dict[str, int | None]:
        """The Batch fields that name this owner, for filters and new rows."""
        if self.alert_id is not None:
            return {"alert_id": self.alert_id}
        return {"digest_run_id": self.digest_run_id}

    def __str__(self) -> str:
        return f"alert {self.alert_id}" if self.alert_id is not None else f"digest run {self.digest_run_id}"

    @property
    def reserves_ledger(self) -> bool:
        """Whether the owner's ledger rows are reserved before sending (a digest's, so
        a period goes to each reader once) rather than written as the batch closes."""
        return self.digest_run_id is not None


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a batch: `batch` when this worker now holds it; else
    None, and `status` says why not (the batch's status, e.g. sent, or "missing")."""

    batch: Batch | None
    status: str


# --- The cut ---------------------------------------------------------------------------

def ranges_after(members: QuerySet[Subscriber], after: int, size: int, *,
                 join_suppressions: bool = False) -> Iterator[tuple[int, int, int]]:
    """Yield (first_id, last_id, count) for consecutive runs of `size` subscribers of
    `members` with ids above `after`. Walks the index in id order, RANGES_PER_STEP
    batches' worth of rows per query (keyset: each step starts after the last id the
    one before read), so batches are queued while the rest of a million-row audience is
    still being walked; a batch may span two steps.

    With `join_suppressions`, `members` leaves out the suppression list's filter and
    each step applies it with one join (see ledger.walk_step).
    """
    if join_suppressions and not ledger.on_postgresql():
        members, join_suppressions = members.unsuppressed(), False
    rows = size * RANGES_PER_STEP
    first = last = None  # the batch being filled: its first member, the last so far
    count = 0  # and how many it has
    while True:
        step_query = members.filter(pk__gt=after).order_by("pk")
        if join_suppressions:
            step_query = step_query.values(sid=F("pk"), hmac=F("email_hmac"))[:rows]
        else:
            step_query = step_query.values(sid=F("pk"))[:rows]
        # Position (1-based) among this step's members of the next batch's first one.
        start = 1 if first is None else size - count + 1
        step = _walk(*step_query.query.sql_with_params(), start, size, join_suppressions)
        for first_id in step.starts:
            if first is not None:
                yield first, first_id - 1, size
            first = first_id
        if step.found:
            if step.starts:
                count = step.found - (start + (len(step.starts) - 1) * size) + 1
            else:
                count += step.found
            last = step.last_member
        if step.scanned < rows:
            break
        after = step.last_read
    if first is not None:
        yield first, last, count


def _walk(sql: str, params: tuple, start: int, size: int, join_suppressions: bool) -> ledger.Step:
    if ledger.on_postgresql():
        return ledger.walk_step(sql, params, start, size, join_suppressions=join_suppressions)
    return ledger.walk_step_portable(sql, params, start, size)


def create_batches(owner: BatchOwner, ranges: Iterable[tuple[int, int, int]], task_name: str,
                   chunk: int = RANGES_PER_STEP,
                   prepare: Callable[[list[Batch]], None] | None = None,
                   keep: Callable[[], None] | None = None) -> int:
    """Write Batch rows for `ranges` under `owner` in chunks, queueing the task named
    `task_name` for each after its chunk commits. `prepare(batches)` runs inside the
    chunk's transaction (digests reserve their ledger rows there); `keep()` runs in it
    first and raises to stop a walker that no longer holds the cut. Returns how many
    ranges were written; a range already cut meets the unique (owner, first id) and
    is left as it was."""
    created = 0
    pending: list[Batch] = []

    def flush() -> None:
        nonlocal created
        with transaction.atomic():
            if keep is not None:
                keep()
            Batch.objects.bulk_create(pending, ignore_conflicts=True)
            batches = list(Batch.objects.filter(
                **owner.fields(), first_subscriber_id__in=[b.first_subscriber_id for b in pending],
                status=Batch.Status.PENDING,
            ))
            if prepare is not None:
                prepare(batches)
            for batch in batches:
                enqueue_on_commit(task_name, batch_id=batch.pk)
        created += len(pending)
        pending.clear()

    for first_id, last_id, count in ranges:
        pending.append(Batch(**owner.fields(), first_subscriber_id=first_id,
                             last_subscriber_id=last_id, planned_count=count))
        # The very first batch goes alone, so its send starts before the rest are cut.
        if len(pending) >= chunk or created == 0:
            flush()
    if pending:
        flush()
    return created


# --- Claim, lease and release ---------------------------------------------------------

def claim_batch(batch_id: int, *, task_id: str = "") -> Claim:
    """Take the batch for this worker, leased for BATCH_LEASE_SECONDS and renewed by
    the process's LeaseKeeper while the send runs. `task_id` is the Celery task's id:
    its redelivered copy takes the batch back at once.

    Raises RetryLater while another worker holds a live lease, or while the batch waits
    for its next attempt, so that a message arriving early waits rather than vanishing.
    """
    lease = timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    claim = ledger.claim if ledger.on_postgresql() else ledger.claim_portable
    batch = claim(batch_id, lease=lease, task_id=task_id)
    if batch is not None:
        if batch.takeovers:
            logger.warning("Batch %s taken over from a worker that died or hung (%d so far)",
                           batch.pk, batch.takeovers)
        keeper.hold(batch)
        return Claim(batch, Batch.Status.SENDING)
    row = Batch.objects.filter(pk=batch_id).values("status", "lease_expires_at", "next_attempt_at").first()
    now = ledger.database_now()
    if row and row["status"] == Batch.Status.SENDING:
        wait = (row["lease_expires_at"] - now).total_seconds() + random.uniform(0.5, 2)
        raise RetryLater(_capped(wait), "batch leased by another worker")
    if row and row["status"] == Batch.Status.PENDING and row["next_attempt_at"] and row["next_attempt_at"] > now:
        raise RetryLater(_capped((row["next_attempt_at"] - now).total_seconds()), "waiting for its next attempt")
    return Claim(None, row["status"] if row else "missing")


def _capped(seconds: float) -> float:
    # Under half the broker's visibility timeout, which would otherwise redeliver the
    # waiting message early and run it twice.
    return min(max(seconds, 0.5), settings.RETRY_MAX_DELAY_SECONDS)


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: exponential backoff with jitter, which spreads
    a thundering herd of retries, and never sooner than the provider's Retry-After."""
    backoff = min(2 ** attempts, settings.RETRY_MAX_DELAY_SECONDS) * random.uniform(0.5, 1.5)
    return _capped(max(backoff, retry_after or 0))


def rate_limit_delay(retry_after: float | None) -> float:
    """After a 429: the provider's Retry-After (1 s if it gave none), stretched by up to
    as much again at random, so that the batches it turned away come back spread out
    rather than all at once."""
    return _capped((retry_after or 1) * random.uniform(1, 2))


class LeaseKeeper:
    """Renews the leases of the batches this process holds, from a daemon thread,
    every quarter lease: a live send keeps its batch however slow the provider, and a
    dead process stops renewing, so its batch is taken over one lease later.

    Only Celery worker processes start it (config/celery.py): elsewhere, in a shell or
    a test calling the engine directly, a claim simply runs out its lease."""

    def __init__(self) -> None:
        self.enabled = False
        self._held: dict[int, int] = {}  # batch id -> the attempt number its claim fenced
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.enabled = True

    def hold(self, batch: Batch) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._held[batch.pk] = batch.attempts
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="batch-lease-keeper", daemon=True)
            self._thread.start()

    def drop(self, batch: Batch) -> None:
        with self._lock:
            self._held.pop(batch.pk, None)

    @contextmanager
    def holding(self, batch: Batch):
        """Stop renewing the batch's lease when its send ends, however it ends: a send
        that died with the database must let its lease run out, to be taken over."""
        try:
            yield
        finally:
            self.drop(batch)

    def _run(self) -> None:
        lease = timedelta(seconds=settings.BATCH_LEASE_SECONDS)
        while True:
            time.sleep(settings.BATCH_LEASE_SECONDS / 4)
            with self._lock:
                held = dict(self._held)
            try:
                ledger.renew(held, lease=lease)
            except DatabaseError:
                # The database is away: the lease may run out, and the batch then be
                # taken over; the fenced close keeps that from writing twice.
                logger.warning("Could not renew batch leases %s", sorted(held), exc_info=True)
                close_old_connections()


keeper = LeaseKeeper()


def retry_or_give_up(batch: Batch, error: TransientSendError, *, subscriber_ids: list[int] | None = None,
                     at_most: float | None = None) -> str:
    """After a transient failure: hand the batch back for a retry with backoff and raise
    RetryLater, until the batch's give-up time (SEND_GIVE_UP_AFTER_SECONDS after it was
    cut, or after "Retry failed now"), when it is closed FAILED for the editor.

    A call that timed out after it was sent may have been accepted: it is retried once;
    if that times out too, the readers (`subscriber_ids`, for owners whose ledger rows
    are written at close) are recorded as sent but not confirmed, never sent a third time.
    `at_most` caps the retry's delay (seconds; the failover's next step).
    """
    now = ledger.database_now()
    if error.maybe_sent and batch.timeouts_after_send >= 1:
        rows = ledger.outcomes(subscriber_ids or [], Delivery.Status.SENT, "", NOT_CONFIRMED)
        return close_batch(batch, Batch.Status.SENT if rows else Batch.Status.FAILED,
                           error=f"{NOT_CONFIRMED}: {error}", results=rows or None)
    deadline = batch.give_up_at or batch.created_at + timedelta(seconds=settings.SEND_GIVE_UP_AFTER_SECONDS)
    if now >= deadline:
        since = batch.waiting_since or now
        logger.error("Batch %s: gave up at %s, the provider failing since %s: %s", batch.pk, deadline, since, error)
        return close_batch(batch, Batch.Status.FAILED, error=(
            f"Gave up at {deadline:%Y-%m-%d %H:%M:%S} UTC; the provider had been failing since"
            f" {since:%H:%M:%S}: {error}"))
    if error.rate_limited:
        # The provider is up and we are over its rate: come back when it says, without
        # the growing backoff of an outage, and without counting as waiting for it.
        delay = rate_limit_delay(error.retry_after)
    else:
        delay = retry_delay(batch.attempts, error.retry_after)
    if at_most is not None:
        # The owner fails over to the fallback provider then (or now): be there.
        delay = _capped(min(delay, at_most))
    if not ledger.release(batch, error=str(error), delay=delay, timed_out=error.maybe_sent,
                          waiting=not error.rate_limited):
        logger.warning("Batch %s was taken over while its call failed", batch.pk)
    keeper.drop(batch)
    raise RetryLater(delay, str(error))


SET_ASIDE = "Set aside as a dead letter"


def set_aside_if_poison(batch: Batch) -> str | None:
    """Close a batch that keeps killing (or hanging) the workers that take it: after
    DEAD_LETTER_AFTER_TAKEOVERS takeovers it is FAILED with the reason, logged at
    ERROR for the operator and shown to the editor, and the rest of its alert or run
    finishes. Its status if set aside, else None."""
    if batch.takeovers < settings.DEAD_LETTER_AFTER_TAKEOVERS:
        return None
    logger.error("Batch %s (%s) set aside after %d takeovers: its send keeps killing or hanging the worker",
                 batch.pk, BatchOwner.of(batch), batch.takeovers)
    return close_batch(batch, Batch.Status.FAILED, error=(
        f"{SET_ASIDE}: its worker died or hung {batch.takeovers} times while sending it."
        f" Last error: {batch.last_error or 'none'}"))


def wake_waiting(owner: BatchOwner, task_name: str) -> int:
    """The provider is back (a batch that had been waiting got through): make every
    batch of `owner` still waiting for its next attempt due now, and queue each. How
    many were woken."""
    waiting = Batch.objects.filter(**owner.fields(), status=Batch.Status.PENDING, next_attempt_at__isnull=False)
    ids = list(waiting.values_list("pk", flat=True))
    if ids:
        Batch.objects.filter(pk__in=ids, status=Batch.Status.PENDING).update(next_attempt_at=Now())
        for batch_id in ids:
            enqueue(task_name, batch_id=batch_id)
        logger.info("Provider back: woke %d waiting batches of %s", len(ids), owner)
    return len(ids)


# --- Close -----------------------------------------------------------------------------

def failed_outcomes(subscriber_ids: Iterable[int], error: str) -> list[Outcome]:
    """One FAILED ledger row per subscriber, for a call the provider refused whole."""
    return ledger.outcomes(subscriber_ids, Delivery.Status.FAILED, "", error[:400])


def close_batch(batch: Batch, status: str, *, error: str = "", skipped: int = 0,
                results: list[Outcome] | None = None, provider: str = "") -> str:
    """Write the batch's ledger rows (`results`, for an owner that writes them as it
    closes) and its outcome and totals in one transaction. Returns `status`.

    The caller finishes its alert or digest run afterwards, outside this transaction,
    so that of two batches finishing together the later one sees the other's commit.
    `provider` names who sent it (provider.provider_label), kept on the batch.
    """
    owner = BatchOwner.of(batch)
    now = timezone.now()
    keeper.drop(batch)
    if results and batch.timeouts_after_send and status == Batch.Status.SENT:
        results = [row if row.error else row._replace(error=MAYBE_TWICE) for row in results]
    # Rows already written as the send went (record_partial): a prefix of `results`.
    recorded = getattr(batch, "recorded_rows", 0)
    if results and batch.attempts == 1 and not owner.reserves_ledger and ledger.on_postgresql() and not recorded:
        try:
            _close_first_attempt(batch, status, error=error, skipped=skipped, results=results, now=now,
                                 provider=provider)
        except IntegrityError:
            logger.warning("Batch %s: ledger rows already present; recording with a conflict check", batch.pk)
        else:
            return status
    batch_message_id = _shared_message_id(results) if results else ""
    with transaction.atomic():
        if results and results[recorded:]:
            _record(batch, results[recorded:], now, batch_message_id)
        if results is not None and batch.attempts == 1 and not owner.reserves_ledger:
            # First attempt: this call's results are all the batch's rows.
            sent = sum(1 for row in results if row.status not in NOT_SENT)
            failed = sum(1 for row in results if row.status == Delivery.Status.FAILED)
        else:
            counts = ledger.counted(batch)
            sent, failed = counts["sent"], counts["failed"]
            if owner.reserves_ledger:
                skipped += counts["skipped"]
            elif status == Batch.Status.SENT:
                # Rows written by earlier attempts are in `sent`; whoever is left out
                # of the range was unsubscribed or suppressed since publication.
                skipped = batch.planned_count - sent - failed
        totals = Totals(status, sent, failed, max(skipped, 0), batch_message_id, error, provider)
        if not ledger.save_totals(batch, totals, now):
            # Taken over meanwhile: the rows above are true (this call was made) and
            # keep the new holder from sending them again; its outcome is the new
            # holder's to write.
            logger.warning("Batch %s was taken over before it closed; its outcome is left to the new holder",
                           batch.pk)
        elif sent:
            ledger.mark_handoff(owner.alert_id, now)
    return status


def record_partial(batch: Batch, results: list[Outcome]) -> None:
    """Keep what a per-message send has handed over so far, as it goes or when it
    failed part-way, so that a retry skips those readers; close_batch then writes only
    the rest."""
    if results:
        _record(batch, results, timezone.now())
        batch.recorded_rows = getattr(batch, "recorded_rows", 0) + len(results)


def _record(batch: Batch, results: list[Outcome], now, shared_id: str = "") -> None:
    (ledger.record if ledger.on_postgresql() else ledger.record_portable)(batch, results, now, shared_id)


def _close_first_attempt(batch: Batch, status: str, *, error: str, skipped: int,
                         results: list[Outcome], now, provider: str = "") -> None:
    """close_batch for the common case, an alert batch's first attempt: one statement."""
    sent = sum(1 for row in results if row.status not in NOT_SENT)
    failed = sum(1 for row in results if row.status == Delivery.Status.FAILED)
    totals = Totals(status, sent, failed, max(skipped, 0), _shared_message_id(results), error, provider)
    ledger.close_first_attempt(batch, totals, results, now)


def _shared_message_id(results: list[Outcome]) -> str:
    """The message id one provider call gave all its recipients (Mailgun), or "". It
    is kept once, on the batch, and left off the rows."""
    ids = {row.message_id for row in results}
    return ids.pop() if len(ids) == 1 and len(results) > 1 else ""
