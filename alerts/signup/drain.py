"""The worker's half of a signup, in bulk: a drain takes up to DRAIN_BATCH unprocessed
consent requests at a time (FOR UPDATE SKIP LOCKED, so drains side by side split the
work), runs the state machine of each and records the confirmation emails due in the
outbox, in one transaction of about ten statements for the whole batch.

The state machine of a signup (a request without a subscriber yet):

- the address is suppressed (bounced, complained): nothing, ever, from a form anyone
  can fill in;
- otherwise the subscriber is found or created (INSERT ... ON CONFLICT DO NOTHING on
  the unique lower(email), then locked), and the request names them;
- confirmed: nothing more (the answer was the same; no email says they are known);
- unsubscribed: back to pending, a fresh double opt-in;
- a "requested" consent event for each purpose asked, with the texts shown;
- double opt-in (or an erased address coming back): a confirmation email; single
  opt-in: granted at once.

A request for a known reader (made by the preference centre or an undo, which did the
state change itself) only needs its email, unless the address is suppressed.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Lower
from django.utils import timezone

from ..common.queueing import nudge, nudged
from ..models import ConsentRequest, Subscriber, Suppression
from ..outbox.services import outbox_confirmations, outbox_send_now
from . import services, sql

logger = logging.getLogger(__name__)

# Requests per transaction: big enough that a spike of hundreds a second costs a few
# transactions a second, small enough that one holds its row locks for well under a
# second and a killed worker loses (rolls back) little.
DRAIN_BATCH = 500
# A drain that keeps finding full batches hands over to a fresh message after this
# long, so that one task never holds a worker process for minutes.
DRAIN_BUDGET_SECONDS = 20.0


def consent_requests_drain(*, gather: float = 0) -> int:
    """Process every unprocessed request, batch by batch, until none is left or the
    time budget is spent (then queue the next drain). Returns how many were processed.

    `gather` (the task passes DRAIN_GATHER_SECONDS): wait that long before reading.
    The nudge key stays set meanwhile, so every signup of that half second rides on
    this drain instead of queueing its own: under a spike a drain then takes hundreds
    of requests, and the fixed cost of a drain (a task, a transaction, a provider call
    for the emails) is not paid every few. The wait is a sleep in the worker: a
    message with a countdown would do it without holding the process, but the Redis
    transport then holds it unacknowledged, and a worker that loses Redis with such a
    message in hand dies restoring it (kombu's restore_unacked), where it must carry on.

    A drain that found work queues one more: a signup sets the nudge key in the round
    trip that counts its rate limit, just before its INSERT commits, so a drain that
    read in between has not seen that row, and nobody else will queue one for it. Under
    a spike that makes draining a steady pulse, which ends with the first drain to find
    nothing; the sweeper is the last resort.

    Safe to run twice, or side by side: each batch is locked with SKIP LOCKED and
    marked processed in the transaction that applies it; a drain that dies rolls its
    batch back for the next one."""
    if gather:
        time.sleep(gather)
    nudged(services.DRAIN_TASK)  # before reading: a request from now on nudges again
    started, total = time.monotonic(), 0
    while True:
        done = _drain_batch()
        total += done
        if done < DRAIN_BATCH:
            break
        if time.monotonic() - started > DRAIN_BUDGET_SECONDS:
            nudge(services.DRAIN_TASK)
            return total
    if total:
        nudge(services.DRAIN_TASK)
    return total


def _drain_batch() -> int:
    with transaction.atomic():
        requests = list(ConsentRequest.objects.select_for_update(skip_locked=True)
                        .filter(processed_at__isnull=True).order_by("created_at")[:DRAIN_BATCH])
        if requests:
            outbox_confirmations(_apply(requests))
    return len(requests)


def consent_requests_apply(*, request_ids: list[int]) -> int:
    """Apply these requests now, if still unprocessed, and send their emails at once
    (not through the outbox task): for one request processed by its own message.
    Returns how many confirmation emails were recorded."""
    with transaction.atomic():
        requests = list(ConsentRequest.objects.select_for_update()
                        .filter(pk__in=request_ids, processed_at__isnull=True).order_by("created_at"))
        row_ids = outbox_confirmations(_apply(requests), nudge_sender=False) if requests else []
    outbox_send_now(row_ids=row_ids)
    return len(row_ids)


def _apply(requests: list[ConsentRequest]) -> list[ConsentRequest]:
    """Run the state machine of each request, in bulk; mark them processed. Returns the
    requests whose confirmation email is due (with `subscriber` set)."""
    now = timezone.now()
    blocked = _suppressions({request.email_hmac for request in requests})
    readers = _lock_or_create([r for r in requests if r.subscriber_id is None and _may_sign_up(r, blocked)])
    due, asked, changed = [], [], {}
    for request in requests:
        request.processed_at = now
        if request.subscriber_id is not None:
            if blocked.get(request.email_hmac, Suppression.Reason.ERASED) == Suppression.Reason.ERASED:
                due.append(request)
            continue
        if not _may_sign_up(request, blocked):
            logger.info("Signup request %s for a suppressed address ignored", request.pk)
            continue
        reader = request.subscriber = readers[request.email.lower()]
        if reader.status == Subscriber.Status.CONFIRMED:
            continue
        if reader.status == Subscriber.Status.UNSUBSCRIBED:
            reader.status, reader.created_at = Subscriber.Status.PENDING, now
            changed[reader.pk] = reader
        asked.append(request)
        if settings.DOUBLE_OPT_IN or request.email_hmac in blocked:
            due.append(request)
        else:
            changed.pop(reader.pk, None)  # _grant saves the reader whole
            reader.save(update_fields=["status", "created_at"])
            services._grant(request, reader, source=request.source, meta=services._meta_of(request))
    Subscriber.objects.bulk_update(list(changed.values()), ["status", "created_at"])
    sql.mark_processed(requests, at=now)
    sql.insert_requested_events(asked, at=now)  # from the rows just marked with their reader
    return due


def _suppressions(hmacs: set[str]) -> dict[str, str]:
    """Active suppressions of these addresses: hash -> reason."""
    return dict(Suppression.objects.active().filter(email_hmac__in=hmacs).values_list("email_hmac", "reason"))


def _may_sign_up(request: ConsentRequest, blocked: dict[str, str]) -> bool:
    # Bounced or complained: never mail it again from a form anyone can fill in. An
    # erased address may come back (and is confirmed by email).
    return blocked.get(request.email_hmac, Suppression.Reason.ERASED) == Suppression.Reason.ERASED


def _lock_or_create(requests: list[ConsentRequest]) -> dict[str, Subscriber]:
    """The subscriber of each request's address (lower-cased), created if new, locked.
    INSERT ... ON CONFLICT DO NOTHING, then lock in id order (no deadlock between two
    drains): concurrent signups of one address meet at the unique index and end up
    holding the same row."""
    if not requests:
        return {}
    sql.create_subscribers(requests)
    readers = (Subscriber.objects.select_for_update().alias(email_lower=Lower("email"))
               .filter(email_lower__in={r.email.lower() for r in requests}).order_by("pk"))
    return {reader.email.lower(): reader for reader in readers}
