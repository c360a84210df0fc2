"""Fixtures of the data-rights tests."""

from __future__ import annotations

import pytest

import alerts.tasks  # noqa: F401  (registers the tasks that views queue by name)
from alerts.common.consent import RequestMeta, record_consent
from alerts.models import Subscriber, Suppression, TrackingEvent
from alerts.rights.admin import erase_subscribers, export_subscriber_data
from alerts.subscribers.admin import SubscriberAdmin
from tests.factories import make_delivery, make_subscriber
from tests.helpers import EMAIL


@pytest.fixture
def erin() -> Subscriber:
    """A subscriber whose address has found its way into every corner."""
    erin = make_subscriber(EMAIL, marketing_consent=True, time_zone="Europe/Berlin")
    record_consent(subscriber=erin, purpose="alerts", action="confirmed", source="web",
                            meta=RequestMeta(ip="203.0.113.7", user_agent="Mozilla/5.0"))
    delivery = make_delivery(erin, headline="Breaking: the budget", status="failed")
    delivery.error = f"Recipient {EMAIL} refused"
    delivery.save()
    delivery.batch.last_error = f"550 for {EMAIL.lower()}; others fine"
    delivery.batch.save()
    TrackingEvent.objects.create(event_id="mg:1", event_type="bounced", recipient_hmac=erin.email_hmac,
                                 description=f"bounce for {EMAIL}")
    Suppression.objects.create(email_hmac=erin.email_hmac, reason="manual", detail=f"old note {EMAIL}",
                               lifted_at=erin.created_at, lift_reason="test")
    return erin


@pytest.fixture
def subscriber_actions(monkeypatch):
    # What the owner of admin.py adds: SubscriberAdmin.actions = [..., these two].
    monkeypatch.setattr(SubscriberAdmin, "actions", [export_subscriber_data, erase_subscribers])
