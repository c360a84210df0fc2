"""Erasure: the subscriber's row, consent history and deliveries deleted, and every
copy of their address in free text wiped. Only the address's keyed hash survives, on
the suppression list, so nobody can add it back without its owner confirming again."""

from __future__ import annotations

import logging
import re

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Model

from ..common.suppression import suppression_add
from ..models import (
    Batch,
    ConsentRequest,
    Delivery,
    RightsEvent,
    Subscriber,
    Suppression,
    TrackingEvent,
    WebhookMessage,
)
from .log import rights_record

logger = logging.getLogger(__name__)

ERASED = "[erased]"

# Free-text columns where a provider error or an admin log line may have copied an
# address. Everything else that names a subscriber hangs off their row and is deleted
# with it (consent events, deliveries, topic choices).
FREE_TEXT: list[tuple[type[Model], str]] = [
    (Batch, "last_error"),
    (Suppression, "detail"),
    (LogEntry, "object_repr"),
    (LogEntry, "change_message"),
    # Outgoing webhooks about the reader (subscriber.confirmed, ...), sent or waiting.
    (WebhookMessage, "payload"),
]


def subscriber_erase(*, subscriber_id: int, by=None, via: str = RightsEvent.Via.EMAIL_LINK) -> bool:
    """Erase a subscriber: their row, consent history and deliveries, and every copy of
    their address in free text. Only the address's keyed hash survives, as an ERASED
    suppression, so imports skip it and a new signup needs a fresh double opt-in.

    `by` is the staff user who did it, or None for the subscriber themselves; the
    erasure is recorded (RightsEvent) with who, when and `via`.
    Returns False if there was no such subscriber (already erased): safe to repeat.
    """
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().filter(pk=subscriber_id).first()
        if subscriber is None:
            return False
        scrub_address(subscriber)
        who = f"staff user {by.pk}" if by is not None else "the subscriber"
        suppression_add(email_hmac=subscriber.email_hmac, reason=Suppression.Reason.ERASED,
                        detail=f"Erased by {who}")
        Delivery.objects.of_subscriber(subscriber.pk).delete()
        # Requests not yet tied to the row (a signup still queued) hold the address too.
        ConsentRequest.objects.filter(email_hmac=subscriber.email_hmac).delete()
        subscriber.delete()
        rights_record(kind=RightsEvent.Kind.ERASURE, via=via, subscriber_ids=[subscriber_id], actor=by)
    logger.info("Erased subscriber %s (by %s)", subscriber_id, who)
    return True


# --- The suppression list -----------------------------------------------------------


def scrub_address(subscriber: Subscriber) -> None:
    """Remove every copy of the subscriber's address outside their own row: provider
    events about them, the admin's history of their record, and any free text."""
    TrackingEvent.objects.filter(recipient_hmac=subscriber.email_hmac).delete()
    content_type = ContentType.objects.get_for_model(Subscriber)
    LogEntry.objects.filter(content_type=content_type, object_id=str(subscriber.pk)).update(
        object_repr=f"Erased subscriber {subscriber.pk}", change_message="")
    pattern = re.compile(re.escape(subscriber.email), re.IGNORECASE)
    for model, field in FREE_TEXT:
        _scrub_column(model, field, subscriber.email, pattern)


def _scrub_column(model: type[Model], field: str, email: str, pattern: re.Pattern) -> None:
    # icontains finds the (few) rows; Python does a case-insensitive replace portably.
    for row in model.objects.filter(**{f"{field}__icontains": email}).only("pk", field):
        cleaned = pattern.sub(ERASED, getattr(row, field))
        model.objects.filter(pk=row.pk).update(**{field: cleaned})
