"""Outgoing webhooks through the real stack: a real Celery worker on the Redis broker
delivers them from the outbox while it sends the alert through the fake Mailgun, to a
receiver on 127.0.0.1 that is down when the alert is published."""

from __future__ import annotations

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.models import Alert, Subscriber, WebhookEndpoint, WebhookMessage
from alerts.outbound.delivery import new_secret
from alerts.publishing.services import alert_publish
from alerts.tasks import sweep_webhooks
from tests.helpers import Worker, wait_until, worker_env

pytestmark = [pytest.mark.worker]


@pytest.fixture
def worker(transactional_db, fake_mailgun, broker_redis, tmp_path):
    broker_redis.flushdb()
    fake_mailgun.reset()
    worker = Worker(worker_env(fake_mailgun, WEBHOOK_RETRY_SECONDS="1"), tmp_path / "worker.log").start()
    yield worker
    worker.stop()


def test_a_receiver_down_at_publication_gets_each_event_once_when_it_is_back(worker, fake_mailgun, receiver):
    confirmed = timezone.now() - timezone.timedelta(hours=1)
    Subscriber.objects.bulk_create([
        Subscriber(email=f"r{i}@example.com", email_hmac=email_hmac(f"r{i}@example.com"),
                   status=Subscriber.Status.CONFIRMED, confirmed_at=confirmed) for i in range(500)])
    endpoint = WebhookEndpoint.objects.create(name="CRM", url=receiver.url, secret=new_secret(),
                                              events=["alert.published", "alert.sent"])
    alert = Alert.objects.create(headline="Storm closes bridge")
    alert_publish(alert_id=alert.pk)

    wait_until(lambda: Alert.objects.get(pk=alert.pk).status == Alert.Status.SENT, timeout=60,
               message="the alert was not sent")
    assert fake_mailgun.total_recipients == 500  # the dead receiver held nothing up
    wait_until(lambda: WebhookMessage.objects.filter(attempts__gte=1).exists(), timeout=30,
               message="the worker never tried the webhooks")
    wait_until(lambda: WebhookMessage.objects.count() == 2, timeout=10, message="alert.sent was not recorded")
    assert receiver.received == []

    receiver.start()

    def delivered() -> bool:
        sweep_webhooks.delay()  # what beat does every 5 s
        return WebhookMessage.objects.filter(status="delivered").count() == 2

    wait_until(delivered, timeout=60, interval=1, message="the webhooks were not delivered")
    for _ in range(3):
        sweep_webhooks.delay()
    wait_until(lambda: not WebhookMessage.objects.exclude(status="delivered").exists(), timeout=10)
    events = receiver.verified(endpoint.secret)
    assert sorted(event["type"] for event in events) == ["alert.published", "alert.sent"]
    sent = next(event for event in events if event["type"] == "alert.sent")
    assert sent["data"]["totals"] == {"audience": 500, "sent": 500, "failed": 0, "skipped": 0}
    assert len(receiver.received) == 2  # once each
