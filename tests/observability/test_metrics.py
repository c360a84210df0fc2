"""The Prometheus endpoint: guarded by a bearer token or an allowed network, and
scraped after a real worker has sent an alert, showing that alert's hand-offs."""

from __future__ import annotations

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.models import Alert, Subscriber, Topic
from alerts.observability.metrics import queue_depths
from alerts.publishing.services import alert_publish
from tests.helpers import wait_until

from .conftest import samples, scrape, value

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_scrape_without_the_token_is_forbidden(client, token):
    response = scrape(client, token=token)
    assert response.status_code == 403
    assert b"stoppress" not in response.content


def test_a_scrape_from_an_allowed_network_needs_no_token(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert scrape(client, token=None).status_code == 200
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert scrape(client, token=None).status_code == 403


def test_nothing_is_exposed_while_neither_token_nor_network_is_set(client, settings):
    settings.METRICS_TOKEN = ""
    assert scrape(client, token=None).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_queue_depth_is_each_celery_queues_length_on_the_broker(broker_redis):
    broker_redis.flushdb()
    broker_redis.rpush("alerts", "a", "b")
    broker_redis.rpush("alerts\x06\x166", "c")  # a priority-6 message
    broker_redis.rpush("transactional", "d")
    assert queue_depths() == {"alerts": 3, "transactional": 1, "digests": 0, "sweeps": 0, "webhooks": 0}
    broker_redis.flushdb()


AUDIENCE = 600


@pytest.mark.worker
def test_a_scrape_after_a_real_worker_sent_an_alert_shows_its_hand_offs(client, celery_worker_process):
    before = samples(client)
    an_hour_ago = timezone.now() - timezone.timedelta(hours=1)
    Subscriber.objects.bulk_create([
        Subscriber(email=f"reader{i}@gmail.com", email_hmac=email_hmac(f"reader{i}@gmail.com"),
                   status=Subscriber.Status.CONFIRMED, confirmed_at=an_hour_ago) for i in range(AUDIENCE)])
    alert = Alert.objects.create(headline="Flood barriers raised", standfirst="Thames at record height")
    alert.topics.set([Topic.objects.create(name="UK", slug="uk")])
    assert alert_publish(alert_id=alert.pk)

    def finished() -> bool:
        alert.refresh_from_db()
        return alert.status == Alert.Status.SENT
    wait_until(finished, timeout=60, message="alert not sent")

    scraped = samples(client)

    def grew(name: str, **labels) -> float:
        return value(scraped, name, **labels) - value(before, name, **labels)

    # Counted in the worker's processes, read here from the shared multiprocess directory.
    assert grew("stoppress_emails_total", provider="mailgun", kind="alert", outcome="sent") == AUDIENCE
    batches = alert.batches.count()  # FANOUT_BATCH_SIZE=250 in the test worker
    assert batches == 3
    assert grew("stoppress_task_seconds_count", task="alerts.send_batch") >= batches
    assert grew("stoppress_provider_call_seconds_count", provider="mailgun", kind="alert") == batches
    assert grew("stoppress_publish_to_handoff_seconds_count", edge="last") == 1
    # From the database at scrape time.
    first = value(scraped, "stoppress_alert_handoff_seconds", alert=alert.pk, edge="first")
    last = value(scraped, "stoppress_alert_handoff_seconds", alert=alert.pk, edge="last")
    assert 0 < first <= last == pytest.approx((alert.last_handoff_at - alert.published_at).total_seconds())
    assert value(scraped, "stoppress_open_batches", kind="alert", status="pending") == 0
    assert ("stoppress_queue_depth", frozenset({("queue", "alerts")})) in scraped
    assert value(scraped, "stoppress_deliverability_rate", kind="complaint") == 0


def test_signups_are_counted_accepted_and_refused(client, eager_celery):
    from tests.helpers import form_data

    before = samples(client)
    client.post("/", form_data(email="new@example.com"))
    client.post("/", form_data(email="not an address"))
    scraped = samples(client)
    for outcome in ("accepted", "invalid"):
        grown = value(scraped, "stoppress_signups_total", source="web", outcome=outcome) - value(
            before, "stoppress_signups_total", source="web", outcome=outcome)
        assert grown == 1, outcome


def test_the_outbox_backlog_counts_the_emails_readers_still_wait_for(client):
    from alerts.models import OutboxEmail

    for status in (OutboxEmail.Status.PENDING, OutboxEmail.Status.PENDING, OutboxEmail.Status.SENDING,
                   OutboxEmail.Status.SENT, OutboxEmail.Status.HELD, OutboxEmail.Status.FAILED):
        OutboxEmail.objects.create(kind=OutboxEmail.Kind.CONFIRMATION, address="r@example.com", status=status)
    # Sent, held and failed emails are settled: only the three still to go are backlog.
    assert value(samples(client), "stoppress_outbox_backlog") == 3
