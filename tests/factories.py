"""Plain builders for the test cast."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.models import Alert, Subscriber, Topic


def make_subscriber(email: str = "alice@example.com", **fields) -> Subscriber:
    fields.setdefault("status", Subscriber.Status.CONFIRMED)
    if fields["status"] == Subscriber.Status.CONFIRMED:
        fields.setdefault("confirmed_at", timezone.now())
    return Subscriber.objects.create(email=email, email_hmac=email_hmac(email), **fields)


def make_delivery(subscriber: Subscriber, *, message_id: str = "<m1@mg.example.com>",
                  headline: str = "Breaking: test alert", status: str = "sent", sent_at=None):
    """A delivery ledger row, with the alert and batch it needs (cut when it was sent)."""
    from alerts.models import Alert, Batch, Delivery

    sent_at = sent_at or timezone.now()
    alert = Alert.objects.create(headline=headline)
    batch = Batch.objects.create(alert=alert, first_subscriber_id=subscriber.pk,
                                 last_subscriber_id=subscriber.pk, created_at=sent_at)
    return Delivery.objects.create(alert=alert, subscriber=subscriber, batch=batch, status=status,
                                   message_id=message_id, sent_at=sent_at)


def make_batch_deliveries(subscribers: list[Subscriber], *, message_id: str = "<m1@mg.example.com>",
                          headline: str = "Breaking: test alert") -> list:
    """Ledger rows of one batch sent as one provider call, as the fan-out writes them:
    the provider's message id on the batch, the rows' own column empty."""
    from alerts.models import Alert, Batch, Delivery

    alert = Alert.objects.create(headline=headline)
    batch = Batch.objects.create(alert=alert, first_subscriber_id=min(s.pk for s in subscribers),
                                 last_subscriber_id=max(s.pk for s in subscribers), message_id=message_id)
    return [Delivery.objects.create(alert=alert, subscriber=s, batch=batch, status="sent",
                                    sent_at=timezone.now()) for s in subscribers]


def published(headline: str, at: datetime, *topics: Topic) -> Alert:
    alert = Alert.objects.create(headline=headline, standfirst=f"About {headline}",
                                 url="https://news.example.com/x", status=Alert.Status.SENT, published_at=at)
    alert.topics.set(topics)
    return alert
