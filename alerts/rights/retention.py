"""Retention: purge what we no longer need, in small chunks so no purge holds long
locks or loads a big table into memory. Every function is safe to re-run."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from ..models import ConsentRequest, Delivery, Subscriber, TrackingEvent

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


def purge_old_deliveries(*, now=None) -> int:
    """Delete delivery ledger rows, and provider events, older than
    DELIVERY_RETENTION_DAYS. Returns the number of delivery rows deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.DELIVERY_RETENTION_DAYS)
    # Rows reserved for a digest but never sent have no sent_at: their batch dates them.
    old = Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, batch__created_at__lt=cutoff)
    deleted = _delete_in_chunks(Delivery.objects.filter(old))
    events = _delete_in_chunks(TrackingEvent.objects.filter(occurred_at__lt=cutoff))
    logger.info("Purged %d deliveries and %d provider events older than %s", deleted, events, cutoff)
    return deleted
