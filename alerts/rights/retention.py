"""Retention: purge what we no longer need, in small chunks so no purge holds long
locks or loads a big table into memory. Every function is safe to re-run."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..models import Batch, ConsentRequest, Delivery, Subscriber, TrackingEvent

logger = logging.getLogger(__name__)

CHUNK = 2000


def _delete_in_chunks(queryset: QuerySet) -> int:
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:CHUNK])
        if not ids:
            return deleted
        queryset.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)


def purge_unconfirmed(*, now=None) -> int:
    """Delete signups never confirmed within UNCONFIRMED_RETENTION_DAYS, with their
    consent events. Readers who were once confirmed and are awaiting a re-confirmation
    keep their history. Returns the number of subscribers deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.UNCONFIRMED_RETENTION_DAYS)
    stale = Subscriber.objects.filter(
        status=Subscriber.Status.PENDING, confirmed_at__isnull=True, created_at__lt=cutoff)
    deleted = _delete_in_chunks(stale)
    # Requests hold an address, an IP and a user agent. By now each was confirmed (its
    # evidence copied into consent events) or will never be: its link expired long ago.
    requests = _delete_in_chunks(ConsentRequest.objects.filter(created_at__lt=cutoff))
    logger.info("Purged %d unconfirmed signups and %d consent requests older than %s",
                deleted, requests, cutoff)
    return deleted


# A purge run stops after this long and leaves the rest to the run it queues next:
# well inside the task's 300 s hard limit, so a backlog is caught up across runs
# instead of being killed at the limit every night.
PURGE_SECONDS = 120


def purge_old_deliveries(*, now=None, seconds: float | None = None) -> int:
    """Delete delivery ledger rows, and provider events, older than
    DELIVERY_RETENTION_DAYS. Returns the number of delivery rows deleted; stops after
    `seconds` (PURGE_SECONDS), and old_deliveries_remain() then says whether to go on.

    Old rows are found through their batches: a batch cut before the cutoff has its
    rows deleted in one statement by the index that serves a batch's rows (an alert's
    by its (alert, subscriber) range, a digest run's by (digest_run, batch)), and is
    marked purged, so no run looks at it again. The ledger itself needs no index by
    time, which would cost every send. (A batch's rows are sent within its give-up
    time of its cut, so a row is kept at most that much longer than the period.)"""
    cutoff = (now or timezone.now()) - timedelta(days=settings.DELIVERY_RETENTION_DAYS)
    stop = time.monotonic() + (PURGE_SECONDS if seconds is None else seconds)
    deleted = 0
    for batch in _unpurged_before(cutoff).order_by("pk").iterator(chunk_size=500):
        if time.monotonic() >= stop:
            break
        with transaction.atomic():
            deleted += Delivery.objects.of_batch(batch).delete()[0]
            Batch.objects.filter(pk=batch.pk).update(purged_at=timezone.now())
    events = _delete_in_chunks(TrackingEvent.objects.filter(occurred_at__lt=cutoff))
    logger.info("Purged %d deliveries and %d provider events older than %s", deleted, events, cutoff)
    return deleted


def old_deliveries_remain(*, now=None) -> bool:
    """Whether a batch older than the retention period still has its ledger rows."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.DELIVERY_RETENTION_DAYS)
    return _unpurged_before(cutoff).exists()


def _unpurged_before(cutoff) -> QuerySet[Batch]:
    return Batch.objects.filter(created_at__lt=cutoff, purged_at__isnull=True)
