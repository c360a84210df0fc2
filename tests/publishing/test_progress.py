"""The per-alert engagement figures, from the delivery ledger."""

from __future__ import annotations

import pytest
from django.utils import timezone

from alerts.models import Alert, Batch, Delivery, Subscriber
from alerts.publishing.progress import alert_engagement

pytestmark = pytest.mark.django_db


def test_alert_engagement_counts_rates_and_warns_on_complaints():
    alert = Alert.objects.create(headline="Breaking")
    batch = Batch.objects.create(alert=alert, first_subscriber_id=1, last_subscriber_id=10**6)
    statuses = (["delivered"] * 880 + ["opened"] * 60 + ["clicked"] * 40 + ["bounced"] * 10
                + ["complained"] * 2 + ["unsubscribed"] * 3 + ["sent"] * 5)
    now = timezone.now()
    subscribers = Subscriber.objects.bulk_create(
        [Subscriber(email=f"r{i}@example.com", email_hmac=f"{i:064d}") for i in range(len(statuses))])
    Delivery.objects.bulk_create([
        Delivery(alert=alert, batch=batch, subscriber=s, status=status, sent_at=now)
        for s, status in zip(subscribers, statuses, strict=True)])
    stats = alert_engagement(alert)
    assert stats["sent"] == 1000
    assert (stats["delivered"], stats["opened"], stats["clicked"]) == (985, 100, 40)
    assert (stats["bounced"], stats["complained"], stats["unsubscribed"]) == (10, 2, 3)
    assert stats["bounced_rate"] == 0.01
    assert stats["complained_rate"] == pytest.approx(2 / 985)
    assert stats["complaint_rate_warning"] is True


def test_an_alert_without_deliveries_has_zero_rates_and_no_warning():
    stats = alert_engagement(Alert.objects.create(headline="Quiet"))
    assert stats["sent"] == 0 and stats["delivered_rate"] == 0.0
    assert stats["complaint_rate_warning"] is False
