"""Outgoing webhooks, the sending side's half: `webhook_emit` writes an event into the
outbox (`WebhookMessage`), one row per endpoint that chose it, in the caller's
transaction, and queues its delivery once that commits. What happened and the news of
it are committed together or not at all, and delivering it (alerts/outbound/) happens
on a queue of its own: a slow or dead endpoint never holds up a send."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from ..models import Subscriber, WebhookEndpoint, WebhookMessage
from .queueing import enqueue_on_commit

logger = logging.getLogger(__name__)

Event = WebhookEndpoint.Event


def webhook_emit(event_type: str, data: dict | Callable[[], dict]) -> int:
    """Record `event_type` with `data` (or what the callable returns, called only if
    some endpoint wants it) for every enabled endpoint that chose it, and queue each
    delivery after the commit. Returns how many were recorded (0, after one query, when
    no endpoint wants it)."""
    endpoints = [endpoint for endpoint in WebhookEndpoint.objects.filter(enabled=True)
                 if event_type in endpoint.events]
    if not endpoints:
        return 0
    if callable(data):
        data = data()
    # The Standard Webhooks payload: type, timestamp, data.
    body = json.dumps({"type": event_type, "timestamp": timezone.now().isoformat(), "data": data},
                      separators=(",", ":"), default=str)
    # Queued below once committed; the sweep queues it again only if that copy was lost.
    requeue_at = timezone.now() + timedelta(seconds=60)
    messages = WebhookMessage.objects.bulk_create([
        WebhookMessage(endpoint=endpoint, message_id=f"msg_{secrets.token_urlsafe(18)}",
                       event_type=event_type, payload=body, next_attempt_at=requeue_at)
        for endpoint in endpoints])
    for message in messages:
        enqueue_on_commit("alerts.deliver_webhook", message_id=message.pk)
    logger.info("Webhook %s recorded for %d endpoint(s)", event_type, len(messages))
    return len(messages)


def subscriber_data(subscriber: Subscriber) -> dict:
    """What a subscriber event says about the reader: enough for the newsroom's CRM to
    find them, nothing of their consent records."""
    return {"subscriber": {"id": subscriber.pk, "email": subscriber.email, "status": subscriber.status}}
