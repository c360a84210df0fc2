"""Publishing through real Celery workers on the real Redis broker and PostgreSQL, with
the real anymail Mailgun backend talking to the local fake Mailgun."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.models import Alert, Batch, Delivery, Subscriber, Suppression, Topic
from alerts.publishing.progress import alert_progress
from alerts.publishing.services import alert_publish, alert_stop
from alerts.tasks import sweep_sends
from tests.helpers import Worker, wait_until, worker_env

pytestmark = [pytest.mark.worker]

AUDIENCE = 3000


def seed(confirmed: int = AUDIENCE) -> set[str]:
    """`confirmed` eligible subscribers plus one of each kind that must get nothing."""
    an_hour_ago = timezone.now() - timezone.timedelta(hours=1)
    rows = [Subscriber(email=f"reader{i}@example.com", email_hmac=email_hmac(f"reader{i}@example.com"),
                       status=Subscriber.Status.CONFIRMED, confirmed_at=an_hour_ago)
            for i in range(confirmed)]
    for email, fields in [
        ("pending@example.com", {"status": Subscriber.Status.PENDING}),
        ("left@example.com", {"status": Subscriber.Status.UNSUBSCRIBED, "confirmed_at": an_hour_ago}),
        ("digest@example.com", {"status": Subscriber.Status.CONFIRMED, "confirmed_at": an_hour_ago,
                                "frequency": Subscriber.Frequency.DAILY}),
        ("bounced@example.com", {"status": Subscriber.Status.CONFIRMED, "confirmed_at": an_hour_ago}),
        ("sport-only@example.com", {"status": Subscriber.Status.CONFIRMED, "confirmed_at": an_hour_ago}),
    ]:
        rows.append(Subscriber(email=email, email_hmac=email_hmac(email), **fields))
    Subscriber.objects.bulk_create(rows, batch_size=2000)
    Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    sport = Topic.objects.create(name="Sport", slug="sport")
    Subscriber.objects.get(email="sport-only@example.com").topics.set([sport])
    return {f"reader{i}@example.com" for i in range(confirmed)}


def new_alert() -> Alert:
    alert = Alert.objects.create(headline="North Korea fires two ballistic missiles",
                                 standfirst="Hours before Kim meets Putin")
    alert.topics.set([Topic.objects.create(name="World", slug="world")])
    return alert


def wait_for_finish(alert: Alert, timeout: float = 60, sweep: bool = False) -> Alert:
    def finished():
        if sweep:
            sweep_sends.delay()
        alert.refresh_from_db()
        return alert.status not in (Alert.Status.SENDING, Alert.Status.SCHEDULED)
    wait_until(finished, timeout=timeout, interval=0.5 if sweep else 0.1,
               message=f"alert still {alert.status}: {alert_progress(alert)}")
    return alert


def test_every_eligible_subscriber_gets_the_alert_exactly_once(celery_worker_process, fake_mailgun):
    expected = seed()
    alert = new_alert()
    assert alert_publish(alert_id=alert.pk)
    alert = wait_for_finish(alert)
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert alert.status == Alert.Status.SENT
    assert Delivery.objects.filter(alert=alert, status=Delivery.Status.SENT).count() == AUDIENCE
    assert len(fake_mailgun.calls) == AUDIENCE // 250
    assert alert_progress(alert).sent == AUDIENCE


def test_injected_provider_errors_still_end_with_everyone_sent_once(celery_worker_process, fake_mailgun):
    expected = seed()
    fake_mailgun.fail_next(2, status=429, retry_after=1)
    fake_mailgun.fail_next(2, status=500)
    fake_mailgun.set_failure_rate(0.2, status=503, seed=7)
    alert = new_alert()
    alert_publish(alert_id=alert.pk)
    alert = wait_for_finish(alert, timeout=120)
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == expected and max(counts.values()) == 1
    assert fake_mailgun.rejected >= 4
    assert alert.status == Alert.Status.SENT


def test_stop_sending_stops_the_remaining_batches(celery_worker_process, fake_mailgun):
    seed()
    fake_mailgun.set_delay(0.3)
    alert = new_alert()
    alert_publish(alert_id=alert.pk)
    wait_until(lambda: fake_mailgun.calls, message="nothing was sent")
    alert_stop(alert_id=alert.pk)
    time.sleep(2)  # batches already with a worker finish
    received = fake_mailgun.total_recipients
    assert 0 < received < AUDIENCE
    time.sleep(1)
    assert fake_mailgun.total_recipients == received
    progress = alert_progress(Alert.objects.get(pk=alert.pk))
    assert progress.status == Alert.Status.CANCELLED and progress.sent == received


def test_a_worker_killed_mid_send_is_finished_by_another_without_a_human(celery_worker_process, fake_mailgun, tmp_path):
    expected = seed()
    fake_mailgun.set_delay(0.4)
    alert = new_alert()
    alert_publish(alert_id=alert.pk)
    wait_until(lambda: len(fake_mailgun.calls) >= 2, message="sending did not start")
    for pid in [celery_worker_process.proc.pid, *celery_worker_process.child_pids()]:
        os.kill(pid, signal.SIGKILL)
    celery_worker_process.proc.wait()
    sent_before = fake_mailgun.total_recipients
    assert sent_before < AUDIENCE

    fake_mailgun.set_delay(0)
    replacement = Worker(celery_worker_process.env, tmp_path / "replacement.log").start()
    try:
        alert = wait_for_finish(alert, timeout=90, sweep=True)
    finally:
        replacement.stop()
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == expected
    duplicated = [email for email, n in counts.items() if n > 1]
    # At most the batches that were in flight (one per pool process) go twice.
    assert len(duplicated) <= 2 * 250
    assert max(counts.values()) <= 2
    assert alert.status == Alert.Status.SENT


@pytest.fixture
def worker_with(transactional_db, fake_mailgun, broker_redis, tmp_path):
    """Start a real worker with these settings (on top of the test defaults)."""
    started = []

    def start(**env: str) -> Worker:
        broker_redis.flushdb()
        fake_mailgun.reset()
        worker = Worker(worker_env(fake_mailgun, **env), tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_a_pool_process_killed_mid_send_has_its_batch_taken_back_at_once(worker_with, fake_mailgun):
    # A lease of a minute: only the redelivered task taking its own claim back can
    # finish the alert within seconds (and nothing here runs the sweeper).
    worker = worker_with(BATCH_LEASE_SECONDS="60")
    expected = seed(1500)
    fake_mailgun.set_delay(0.5)
    alert = new_alert()
    alert_publish(alert_id=alert.pk)
    wait_until(lambda: Batch.objects.filter(alert=alert, status=Batch.Status.SENDING).exists(),
               message="no batch was being sent")
    killed_at = time.monotonic()
    for pid in worker.child_pids():
        os.kill(pid, signal.SIGKILL)
    fake_mailgun.set_delay(0)
    alert = wait_for_finish(alert, timeout=40)
    assert time.monotonic() - killed_at < 30  # not the 60 s lease
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == expected and max(counts.values()) <= 2
    assert len([n for n in counts.values() if n > 1]) <= 2 * 250  # at most the batches in flight
    assert Batch.objects.filter(alert=alert, takeovers__gt=0).exists()


def test_a_slow_provider_keeps_its_batches_the_lease_is_renewed_while_they_send(worker_with, fake_mailgun):
    # Each call takes longer than the whole 4 s lease; the worker's heartbeat renews it,
    # so the sweeper (run all along) never hands a live batch to another process.
    worker_with(BATCH_LEASE_SECONDS="4")
    expected = seed(250)  # one batch: the other pool process is free to take it over
    fake_mailgun.set_delay(6)
    alert = new_alert()
    alert_publish(alert_id=alert.pk)
    alert = wait_for_finish(alert, timeout=60, sweep=True)
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == expected and max(counts.values()) == 1
    assert fake_mailgun.stats()["calls"] == 1
    assert not Batch.objects.filter(alert=alert, takeovers__gt=0).exists()
