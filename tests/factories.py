"""Plain builders for the test cast."""

from __future__ import annotations

from django.utils import timezone

from alerts.addresses import email_hmac
from alerts.models import Subscriber


def make_subscriber(email: str = "alice@example.com", **fields) -> Subscriber:
    fields.setdefault("status", Subscriber.Status.CONFIRMED)
    if fields["status"] == Subscriber.Status.CONFIRMED:
        fields.setdefault("confirmed_at", timezone.now())
    return Subscriber.objects.create(email=email, email_hmac=email_hmac(email), **fields)
