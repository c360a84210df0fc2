"""Publishing services called directly: stopping an alert part-way."""

from __future__ import annotations

import pytest

from alerts.models import Alert
from alerts.publishing import fanout
from alerts.publishing.progress import alert_progress
from alerts.publishing.services import alert_stop
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db


def test_stopping_an_alert_cancels_the_batches_not_yet_sent(alert, settings, mailgun):
    for i in range(6):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, batch_size=2, settings=settings)
    fanout.batch_send(batch_id=batches[0].pk)
    assert alert_stop(alert_id=alert.pk)
    send_all(batches[1:])
    assert mailgun.total_recipients == 2
    alert.refresh_from_db()
    assert alert.status == Alert.Status.CANCELLED
    assert alert_progress(alert).sent == 2
