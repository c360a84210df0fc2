"""The recovery sweep: what a lost fan-out leaves behind is found and finished."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import sweeper
from alerts.models import Alert
from alerts.publishing.services import alert_publish
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db


def test_publishing_while_the_broker_is_down_loses_nothing(alert, settings, mailgun, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    from alerts.tasks import fan_out_alert

    make_subscriber()

    def broker_down(**kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(fan_out_alert, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        assert alert_publish(alert_id=alert.pk)  # no exception reaches the editor
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.SENDING
    monkeypatch.undo()

    settings.CELERY_TASK_ALWAYS_EAGER = True  # the broker is back; the worker runs what is queued
    later = timezone.now() + timedelta(seconds=settings.SWEEP_REQUEUE_AFTER_SECONDS + 1)
    assert sweeper.sweep(now=later)["fan_outs"] == 1
    assert mailgun.total_recipients == 1
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.SENT
