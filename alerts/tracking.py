"""Provider tracking events (anymail's `tracking` signal): the delivery ledger,
bounces, complaints and unsubscribes reported by the email provider.

A receiver that raises makes anymail answer an error and the provider resend the
event, possibly for days. So this one is quick, ignores what it cannot match, and
applies each event once: the TrackingEvent row (unique event_id) is inserted in the
same transaction as the event's effects, and a replay finds it and stops.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta

from anymail.signals import AnymailTrackingEvent, EventType, RejectReason, tracking
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from .common.addresses import email_hmac
from .common.consent import RequestMeta
from .common.suppression import suppression_add
from .models import Batch, ConsentEvent, Delivery, Subscriber, Suppression, TrackingEvent
from .observability import time_to_inbox as observed
from .subscribers.services import subscriber_unsubscribe

logger = logging.getLogger(__name__)

# Our name for a temporary failure, whatever the provider calls it (Mailgun's
# "failed, severity temporary", Postmark's SoftBounce, SES's Transient bounce).
SOFT_BOUNCE = "soft_bounce"

DELIVERY_STATUS = {
    EventType.DELIVERED: Delivery.Status.DELIVERED,
    EventType.DEFERRED: Delivery.Status.DEFERRED,
    SOFT_BOUNCE: Delivery.Status.DEFERRED,
    EventType.BOUNCED: Delivery.Status.BOUNCED,
    EventType.REJECTED: Delivery.Status.FAILED,
    EventType.FAILED: Delivery.Status.FAILED,
    EventType.COMPLAINED: Delivery.Status.COMPLAINED,
    EventType.OPENED: Delivery.Status.OPENED,
    EventType.CLICKED: Delivery.Status.CLICKED,
    EventType.UNSUBSCRIBED: Delivery.Status.UNSUBSCRIBED,
}

# Providers send events out of order (an open can overtake its delivery), so a
# delivery only ever moves to a later state in this list.
STATUS_ORDER = [
    Delivery.Status.SENT, Delivery.Status.DEFERRED, Delivery.Status.DELIVERED,
    Delivery.Status.OPENED, Delivery.Status.CLICKED, Delivery.Status.UNSUBSCRIBED,
    Delivery.Status.FAILED, Delivery.Status.BOUNCED, Delivery.Status.COMPLAINED,
]

# A provider refusing to send because of its own list means an earlier hard failure.
REFUSAL_REASONS = {RejectReason.BOUNCED, RejectReason.INVALID, RejectReason.SPAM}

ADDRESS_LIKE = re.compile(r"[^\s<>\"'(),;:@]*@[^\s<>\"'(),;:]*")
# Longer than anything we keep of a provider's text (400 characters): the scrub runs
# on this much only, since matching is quadratic on a long run without separators
# (20,000 characters took a second), and a provider or a forger picks the length.
SCRUB_WINDOW = 480


@receiver(tracking, dispatch_uid="stoppress.tracking")
def handle_tracking_event(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    """Apply one provider event. Never raises for bad or unknown input: it is logged
    and ignored, so the provider does not retry it forever."""
    if not _accepting(esp_name):
        return
    kind = classify(event)
    recipient = event.recipient if isinstance(event.recipient, str) else ""
    if kind not in DELIVERY_STATUS or "@" not in recipient or len(recipient) > 320:
        logger.debug("Ignored %s event from %s", event.event_type, esp_name)
        observed.count_event(esp_name, kind, "ignored")
        return
    recipient_hmac = email_hmac(recipient)
    subscriber_id = (
        Subscriber.objects.filter(email_hmac=recipient_hmac).values_list("pk", flat=True).first()
    )
    if subscriber_id is None:
        logger.info("Ignored %s event from %s for an unknown address", kind, esp_name)
        observed.count_event(esp_name, kind, "unknown_address")
        return
    applied = apply_event(event, kind=kind, esp_name=esp_name, subscriber_id=subscriber_id,
                          recipient_hmac=recipient_hmac)
    observed.count_event(esp_name, kind, "applied" if applied else "replayed")


def _accepting(esp_name: str) -> bool:
    if not settings.TRACKING_WEBHOOKS_ENABLED:
        return False
    if str(esp_name).lower() not in settings.TRACKING_WEBHOOK_ESPS:
        logger.warning("Ignored a tracking event from %s, which is not configured", esp_name)
        return False
    if not settings.DEBUG and not settings.ANYMAIL.get("WEBHOOK_SECRET"):
        # The system check refuses to start like this; if checks were skipped, still
        # never act on events anyone on the internet could have posted.
        logger.error("Ignored a tracking event: ANYMAIL WEBHOOK_SECRET is not set")
        return False
    return True


def classify(event: AnymailTrackingEvent) -> str:
    """Anymail's event type, except that temporary failures become SOFT_BOUNCE."""
    if event.event_type == EventType.DEFERRED:
        return SOFT_BOUNCE
    if event.event_type == EventType.BOUNCED and _is_temporary(event):
        return SOFT_BOUNCE
    return event.event_type


def _is_temporary(event: AnymailTrackingEvent) -> bool:
    # Anymail maps these soft bounces to "bounced"; the raw event says which they were.
    raw = event.esp_event if isinstance(event.esp_event, dict) else {}
    if raw.get("Type") == "SoftBounce":  # Postmark
        return True
    if raw.get("type") == "blocked":  # SendGrid's "bounce" of type blocked
        return True
    return str(event.description or "").startswith("Transient")  # Amazon SES


def apply_event(
    event: AnymailTrackingEvent, *, kind: str, esp_name: str, subscriber_id: int, recipient_hmac: str,
) -> bool:
    """Record and apply one matched event. Returns False if it was a replay."""
    occurred_at = event.timestamp if isinstance(event.timestamp, datetime) else timezone.now()
    message_id = str(event.message_id or "")[:200]
    # Observability: the event's alert and mailbox provider (alerts/observability/).
    arrival = observed.arrival_of(message_id, event.recipient)
    with transaction.atomic():
        if not _record_once(event, kind=kind, esp_name=esp_name, recipient_hmac=recipient_hmac,
                            message_id=message_id, occurred_at=occurred_at, arrival=arrival):
            logger.info("Ignored a replayed %s event from %s", kind, esp_name)
            return False
        _update_delivery(message_id, recipient_hmac, DELIVERY_STATUS[kind])
        _apply_consequences(event, kind=kind, esp_name=esp_name, subscriber_id=subscriber_id,
                            recipient_hmac=recipient_hmac)
    if kind == EventType.DELIVERED:
        observed.observe_arrival(arrival, occurred_at)
    return True


def _record_once(event: AnymailTrackingEvent, *, kind: str, esp_name: str, recipient_hmac: str,
                 message_id: str, occurred_at: datetime, arrival: observed.Arrival) -> bool:
    _, created = TrackingEvent.objects.get_or_create(
        event_id=event_key(event, esp_name),
        defaults={
            "event_type": kind, "message_id": message_id, "recipient_hmac": recipient_hmac,
            "reject_reason": str(event.reject_reason or "")[:40],
            "description": _scrubbed(event.description or event.mta_response or "")[:400],
            "occurred_at": occurred_at, "alert_id": arrival.alert_id, "mailbox": arrival.mailbox,
        },
    )
    return created


def event_key(event: AnymailTrackingEvent, esp_name: str) -> str:
    """A stable unique id for an event: the provider's, or a digest of its content
    when the provider gives none (so a replay still matches)."""
    raw_id = str(event.event_id or "")
    if not raw_id:
        parts = [event.event_type, event.message_id, event.recipient, event.timestamp,
                 event.description]
        raw_id = hashlib.sha256(repr(parts).encode()).hexdigest()
    key = f"{str(esp_name).lower()}:{raw_id}"
    return key if len(key) <= 200 else hashlib.sha256(key.encode()).hexdigest()


def _scrubbed(text: object) -> str:
    # Bounce messages quote addresses; those must not outlive an erasure. Truncated
    # first; an address cut in two at the end is still caught (either half is matched).
    return ADDRESS_LIKE.sub("<address>", str(text)[:SCRUB_WINDOW])


def _update_delivery(message_id: str, recipient_hmac: str, status: str) -> None:
    if not message_id:
        return
    bare = message_id.strip("<>")
    spellings = {message_id, bare, f"<{bare}>"}
    earlier = STATUS_ORDER[: STATUS_ORDER.index(status)]
    subscribers = list(Subscriber.objects.filter(email_hmac=recipient_hmac).values_list("pk", flat=True))
    if not subscribers:
        return
    # The id is on the row when the recipient had a message of their own, and on the
    # batch when the whole batch went out as one provider call. Ids are looked up
    # first, so that each side of the OR is one index lookup of the ledger.
    match = Q(message_id__in=spellings)
    batches = list(Batch.objects.filter(message_id__in=spellings).values_list("pk", "alert_id"))
    if batches:
        match |= Q(message_id="", alert_id__in={alert for _, alert in batches},
                   batch_id__in=[pk for pk, _ in batches])
    Delivery.objects.filter(match, subscriber_id__in=subscribers, status__in=earlier).update(
        status=status, updated_at=timezone.now())


def _apply_consequences(event: AnymailTrackingEvent, *, kind: str, esp_name: str,
                        subscriber_id: int, recipient_hmac: str) -> None:
    event_id = event_key(event, esp_name)
    detail = f"{esp_name}: {_scrubbed(event.description or event.mta_response or kind)}"
    Reason = Suppression.Reason
    if kind == EventType.COMPLAINED:
        suppression_add(email_hmac=recipient_hmac, reason=Reason.COMPLAINT,
                                 event_id=event_id, detail=detail)
        _unsubscribe(subscriber_id, note=f"Spam complaint reported by {esp_name}")
    elif kind == EventType.BOUNCED:
        suppression_add(email_hmac=recipient_hmac, reason=Reason.HARD_BOUNCE,
                                 event_id=event_id, detail=detail)
    elif kind == SOFT_BOUNCE and soft_bounce_count(recipient_hmac) >= settings.SOFT_BOUNCE_LIMIT:
        suppression_add(email_hmac=recipient_hmac, reason=Reason.SOFT_BOUNCES,
                                 event_id=event_id, detail=detail)
    elif kind == EventType.REJECTED and event.reject_reason in REFUSAL_REASONS:
        suppression_add(email_hmac=recipient_hmac, reason=Reason.REFUSED,
                                 event_id=event_id, detail=detail)
    elif kind == EventType.UNSUBSCRIBED or (
        kind == EventType.REJECTED and event.reject_reason == RejectReason.UNSUBSCRIBED
    ):
        _unsubscribe(subscriber_id, note=f"Unsubscribed through {esp_name}")


def _unsubscribe(subscriber_id: int, *, note: str) -> None:
    subscriber_unsubscribe(subscriber_id=subscriber_id, source=ConsentEvent.Source.PROVIDER,
                           meta=RequestMeta(), note=note)


def soft_bounce_count(recipient_hmac: str) -> int:
    """Distinct messages that soft-bounced for this address within
    SOFT_BOUNCE_WINDOW_DAYS and since its last successful delivery. Distinct, so a
    provider retrying one message many times counts once."""
    since = timezone.now() - timedelta(days=settings.SOFT_BOUNCE_WINDOW_DAYS)
    events = TrackingEvent.objects.filter(recipient_hmac=recipient_hmac)
    last_delivered = (
        events.filter(event_type=EventType.DELIVERED).order_by("-occurred_at")
        .values_list("occurred_at", flat=True).first()
    )
    if last_delivered and last_delivered > since:
        since = last_delivered
    soft = events.filter(event_type=SOFT_BOUNCE, occurred_at__gte=since)
    return soft.exclude(message_id="").values("message_id").distinct().count() + soft.filter(
        message_id="").count()
