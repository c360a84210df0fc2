"""What the schema does on its own: deleting an alert."""

from __future__ import annotations

import pytest

from alerts.models import Alert, Batch, Delivery
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db


def test_deleting_an_alert_deletes_its_batches_and_ledger_rows_only(alert, settings, mailgun):
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    other = Alert.objects.create(headline="Other", url="https://news.example.com/b")
    for sent in (alert, other):
        send_all(publish_and_cut(sent, settings=settings))
    assert Delivery.objects.count() == 6

    Alert.objects.get(pk=alert.pk).delete()

    assert set(Delivery.objects.values_list("alert_id", flat=True)) == {other.pk}
    assert Delivery.objects.count() == 3
    assert not Batch.objects.filter(alert_id=alert.pk).exists()
