"""Data rights: everything we hold about a subscriber, as the JSON they (or staff)
download. Erasure lives beside it, in `erase.py`."""

from __future__ import annotations

import json
from datetime import datetime

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from ..models import ConsentEvent, Delivery, RightsEvent, Subscriber, Suppression
from .log import rights_record


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def subscriber_data(subscriber_id: int) -> dict | None:
    """Everything we hold about one subscriber, JSON-ready, or None if unknown."""
    subscriber = Subscriber.objects.filter(pk=subscriber_id).prefetch_related("topics").first()
    if subscriber is None:
        return None
    return {
        "exported_at": _iso(timezone.now()),
        "publication": settings.PUBLICATION_NAME,
        "subscription": _subscription(subscriber),
        "consent_history": _consent_history(subscriber),
        "deliveries": _deliveries(subscriber),
        "suppressions": _suppressions(subscriber),
        "waiting_for_confirmation": _requests(subscriber),
    }


def subscriber_data_export(*, subscriber_id: int, via: str, actor=None) -> str | None:
    """Everything we hold about one subscriber as JSON, recorded as an export by
    `actor` (None: the reader) through `via`; None if unknown."""
    with transaction.atomic():
        data = subscriber_data(subscriber_id)
        if data is None:
            return None
        rights_record(kind=RightsEvent.Kind.EXPORT, via=via, subscriber_ids=[subscriber_id], actor=actor)
    return json.dumps(data, indent=2, cls=DjangoJSONEncoder)


def _subscription(subscriber: Subscriber) -> dict:
    return {
        "email": subscriber.email,
        "status": subscriber.status,
        "breaking_news_emails": subscriber.status == Subscriber.Status.CONFIRMED,
        "marketing_consent": subscriber.marketing_consent,
        "frequency": subscriber.frequency,
        "topics": [topic.name for topic in subscriber.topics.all()] or "all",
        "time_zone": subscriber.time_zone,
        "signed_up_via": subscriber.source,
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
        # Re-engagement: when "still want these?" was asked (while unanswered) and answered.
        "still_want_these_asked_at": _iso(subscriber.reengage_asked_at),
        "still_want_these_answered_at": _iso(subscriber.reengage_kept_at),
    }


def _consent_history(subscriber: Subscriber) -> list[dict]:
    events = ConsentEvent.objects.filter(subscriber=subscriber).select_related(
        "wording", "privacy_notice")
    return [{
        "at": _iso(event.created_at),
        "purpose": event.purpose,
        "action": event.action,
        "how": event.get_source_display(),
        "wording_shown": event.wording.text if event.wording else None,
        "privacy_notice_version": event.privacy_notice.version if event.privacy_notice else None,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "note": event.note,
    } for event in events]


def _deliveries(subscriber: Subscriber) -> list[dict]:
    rows = Delivery.objects.of_subscriber(subscriber.pk).order_by("sent_at", "id").values_list(
        "alert__headline", "digest_key", "status", "sent_at", "updated_at")
    return [{"email": headline or f"Digest {digest_key}", "status": status,
             "sent_at": _iso(sent), "updated_at": _iso(updated)}
            for headline, digest_key, status, sent, updated in rows]


def _suppressions(subscriber: Subscriber) -> list[dict]:
    rows = Suppression.objects.filter(email_hmac=subscriber.email_hmac).order_by("created_at")
    return [{"reason": row.get_reason_display(), "since": _iso(row.created_at),
             "lifted_at": _iso(row.lifted_at)} for row in rows]


def _requests(subscriber: Subscriber) -> list[dict]:
    rows = subscriber.consent_requests.filter(confirmed_at__isnull=True).order_by("created_at")
    return [{"asked_at": _iso(row.created_at), "purposes": row.purposes, "how": row.get_source_display(),
             "ip_address": row.ip_address, "user_agent": row.user_agent} for row in rows]
