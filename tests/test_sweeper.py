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


def test_the_sweeper_leaves_a_batch_alone_while_it_waits_out_its_backoff(alert, settings, mailgun):
    from alerts.models import Batch
    from alerts.publishing import fanout
    from alerts.sending.batches import RetryLater
    from tests.helpers import publish_and_cut

    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(1, status=503, retry_after=120)
    with pytest.raises(RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    assert sweeper.sweep(now=timezone.now()) == {"published": 0, "fan_outs": 0, "batches": 0, "probes": 0,
                                                 "finished": 0, "drains": 0}
    later = timezone.now() + timedelta(seconds=max(settings.SWEEP_REQUEUE_AFTER_SECONDS,
                                                   settings.PROVIDER_PROBE_SECONDS) + 1)
    result = sweeper.sweep(now=later)  # still inside the provider's two minutes
    assert result["batches"] == 0  # not re-queued as if lost...
    assert result["probes"] == 1  # ...but it probes whether the provider is back
    assert Batch.objects.get(pk=batch.pk).next_attempt_at <= later


def test_the_sweeper_re_queues_a_batch_whose_next_attempt_is_long_overdue(alert, settings, mailgun):
    from alerts.models import Batch
    from tests.helpers import publish_and_cut

    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    late = timezone.now() + timedelta(seconds=settings.SWEEP_REQUEUE_AFTER_SECONDS + 1)
    assert sweeper.sweep(now=late)["batches"] == 1


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_never_run_side_by_side():
    import psycopg
    from django.conf import settings as django_settings

    db = django_settings.DATABASES["default"]
    other = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [sweeper.SWEEP_LOCK])  # a sweep running elsewhere
        assert sweeper.sweep() == {"skipped": 1}
        other.execute("SELECT pg_advisory_unlock(%s)", [sweeper.SWEEP_LOCK])
        assert "skipped" not in sweeper.sweep()
    finally:
        other.close()


def test_a_signup_committed_while_the_broker_was_down_is_processed_by_the_sweeper(
        settings, mailoutbox, monkeypatch, django_capture_on_commit_callbacks):
    from celery import current_app
    from kombu.exceptions import OperationalError

    from alerts.common.consent import RequestMeta
    from alerts.models import ConsentRequest, Subscriber
    from alerts.signup.services import DRAIN_TASK, signup_request

    def broker_down(**kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(current_app.tasks[DRAIN_TASK], "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        signup_request(email="reader@example.com", marketing=False, source="web", meta=RequestMeta())
    monkeypatch.undo()
    assert ConsentRequest.objects.get().processed_at is None and mailoutbox == []
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the broker is back
    later = timezone.now() + timedelta(seconds=settings.SWEEP_REQUEUE_AFTER_SECONDS + 1)
    sweeper.sweep(now=later)
    assert ConsentRequest.objects.get().processed_at is not None
    assert Subscriber.objects.get().email == "reader@example.com"
    assert [message.to for message in mailoutbox] == [["reader@example.com"]]
