"""Batches called directly: cutting the audience into ranges, claiming, leases and
takeovers, waiting out a failing provider, giving up, dead letters and timeouts."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import Alert, Batch, Subscriber, Suppression
from alerts.publishing import fanout
from alerts.publishing.progress import alert_progress
from alerts.sending import batches as batch_engine
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db


def test_sending_a_batch_twice_sends_nothing_twice(alert, settings, mailgun):
    for i in range(5):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, settings=settings)
    send_all(batches)
    send_all(batches)
    assert sum(mailgun.recipient_counts().values()) == 5
    assert max(mailgun.recipient_counts().values()) == 1


def test_a_batch_claimed_by_another_worker_is_retried_after_its_lease(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.SENDING,
                                             lease_expires_at=timezone.now() + timedelta(seconds=30))
    with pytest.raises(batch_engine.RetryLater) as later:
        fanout.batch_send(batch_id=batch.pk)
    assert 25 < later.value.countdown < 35
    assert mailgun.calls == []


def test_an_expired_lease_is_taken_over(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.SENDING,
                                             lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert mailgun.total_recipients == 1


def due_now(batch):
    """Skip the backoff: the batch's next attempt is due (as if its wait had passed)."""
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def test_an_outage_is_waited_out_not_counted_out(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(100, status=503)
    for _ in range(12):  # far more failures than any fixed count would allow
        with pytest.raises(batch_engine.RetryLater):
            fanout.batch_send(batch_id=batch.pk)
        due_now(batch)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.PENDING and batch.waiting_since is not None
    assert alert_progress(Alert.objects.get(pk=alert.pk)).waiting.startswith("since ")
    mailgun.reset()  # the provider is back
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert mailgun.total_recipients == 1
    batch.refresh_from_db()
    assert batch.waiting_since is None and batch.next_attempt_at is None


def test_a_batch_is_not_tried_again_before_its_backoff_is_over(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(1, status=503)
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    with pytest.raises(batch_engine.RetryLater) as early:
        fanout.batch_send(batch_id=batch.pk)  # a duplicate message, arriving early
    assert "waiting for its next attempt" in str(early.value)
    assert mailgun.stats()["rejected"] == 1 and mailgun.calls == []  # one call per backoff step


def test_a_batch_failing_past_its_give_up_time_fails_and_retry_failed_now_sends_it(alert, settings, mailgun):
    from alerts.publishing.services import alert_retry_failed

    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(100, status=500)
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    Batch.objects.filter(pk=batch.pk).update(give_up_at=timezone.now() - timedelta(seconds=1))
    due_now(batch)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    alert.refresh_from_db()
    assert alert.status == Alert.Status.FAILED
    assert alert_progress(alert).batches_failed == 1
    assert "Gave up at" in Batch.objects.get(pk=batch.pk).last_error
    mailgun.reset()
    assert alert_retry_failed(alert_id=alert.pk) == 1
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SENT and mailgun.total_recipients == 1
    assert alert_retry_failed(alert_id=alert.pk) == 0  # nothing left to retry


def test_a_permanent_refusal_is_not_retried_by_an_outage_rule(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(1, status=401)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    assert Batch.objects.get(pk=batch.pk).waiting_since is None


def test_the_first_batch_through_after_an_outage_wakes_the_others(alert, settings, mailgun, eager_celery):
    for i in range(6):
        make_subscriber(f"r{i}@example.com")
    settings.CELERY_TASK_ALWAYS_EAGER = False  # queue nothing yet: the test sends by hand
    batches = publish_and_cut(alert, batch_size=2, settings=settings)
    mailgun.fail_next(3, status=503)
    for batch in batches:
        with pytest.raises(batch_engine.RetryLater):
            fanout.batch_send(batch_id=batch.pk)
    mailgun.reset()
    due_now(batches[0])  # the probe
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the woken batches run as they are queued
    assert fanout.batch_send(batch_id=batches[0].pk) == Batch.Status.SENT
    assert mailgun.total_recipients == 6
    assert set(Batch.objects.filter(alert=alert).values_list("status", flat=True)) == {Batch.Status.SENT}


def test_a_redelivered_task_takes_its_batch_back_at_once(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    claim = batch_engine.claim_batch(batch.pk, task_id="task-1")  # ...and its worker dies
    assert claim.batch is not None
    with pytest.raises(batch_engine.RetryLater):
        batch_engine.claim_batch(batch.pk, task_id="another-task")  # a live lease holds
    assert fanout.batch_send(batch_id=batch.pk, task_id="task-1") == Batch.Status.SENT
    batch.refresh_from_db()
    assert (batch.attempts, batch.takeovers) == (2, 1)
    assert mailgun.total_recipients == 1


def test_a_worker_that_lost_its_claim_cannot_close_the_batch(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    stale = batch_engine.claim_batch(batch.pk, task_id="slow").batch
    Batch.objects.filter(pk=batch.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert fanout.batch_send(batch_id=batch.pk, task_id="fast") == Batch.Status.SENT
    batch_engine.close_batch(stale, Batch.Status.FAILED, error="the slow worker's late word")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.SENT and batch.last_error == ""


def test_a_worker_whose_clock_runs_fast_does_not_steal_a_live_batch(alert, settings, mailgun, monkeypatch):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    assert batch_engine.claim_batch(batch.pk, task_id="live").batch is not None
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(minutes=2))
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk, task_id="fast-clock")
    assert mailgun.calls == []


def test_a_batch_that_keeps_killing_its_worker_is_set_aside_and_the_rest_finishes(alert, settings, mailgun,
                                                                                   caplog):
    for i in range(4):
        make_subscriber(f"r{i}@example.com")
    poison, healthy = publish_and_cut(alert, batch_size=2, settings=settings)
    for n in range(settings.DEAD_LETTER_AFTER_TAKEOVERS):
        batch_engine.claim_batch(poison.pk, task_id=f"doomed-{n}")  # ...and the worker dies
        Batch.objects.filter(pk=poison.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert fanout.batch_send(batch_id=poison.pk) == Batch.Status.FAILED
    assert "set aside" in caplog.text
    assert fanout.batch_send(batch_id=healthy.pk) == Batch.Status.SENT
    alert.refresh_from_db()
    progress = alert_progress(alert)
    assert alert.status == Alert.Status.SENT and progress.batches_set_aside == 1
    assert mailgun.total_recipients == 2


def test_a_call_that_timed_out_after_sending_is_sent_again_once_and_says_so(alert, settings, mailgun):
    import time

    from alerts.models import Delivery

    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.set_delay(0.8)  # the provider takes the call, but answers too late
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    time.sleep(0.7)  # it accepts the call after the client gave up
    assert mailgun.total_recipients == 3
    mailgun.set_delay(0)
    due_now(batch)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert set(Delivery.objects.filter(alert=alert).values_list("error", flat=True)) == {batch_engine.MAYBE_TWICE}
    assert alert_progress(Alert.objects.get(pk=alert.pk)).maybe_twice == 3


def test_a_second_timeout_after_sending_is_not_sent_a_third_time(alert, settings, mailgun):
    import time

    from alerts.models import Delivery

    make_subscriber()
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.set_delay(0.8)
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    due_now(batch)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    time.sleep(0.7)
    assert mailgun.stats()["calls"] == 2  # and never a third
    assert Delivery.objects.get(alert=alert).error == batch_engine.NOT_CONFIRMED


def test_the_audience_walk_cuts_the_same_batches_in_small_steps(alert, settings, mailgun, monkeypatch):
    monkeypatch.setattr(batch_engine, "RANGES_PER_STEP", 2)
    for i in range(20):
        make_subscriber(f"r{i}@example.com")
    Subscriber.objects.filter(email="r7@example.com").update(status=Subscriber.Status.UNSUBSCRIBED)
    batches = publish_and_cut(alert, batch_size=3, settings=settings)
    assert [b.planned_count for b in batches] == [3] * 6 + [1]
    send_all(batches)
    counts = mailgun.recipient_counts()
    assert len(counts) == 19 and max(counts.values()) == 1 and "r7@example.com" not in counts


@pytest.mark.parametrize("suppressed", [
    [],
    [3, 4, 5],             # the end of the first step's first batch
    list(range(6, 18)),    # a step with too few members to fill the open batch
    [0, 13, 20, 26, 27],   # scattered, first and last included
    list(range(1, 28)),    # everyone after the first reader
])
def test_the_walk_cuts_full_batches_around_suppressed_readers(alert, settings, mailgun, monkeypatch,
                                                              suppressed):
    # Steps of 8 rows and batches of 4: suppressed readers are read by a step but are
    # not members, so batches span steps and every step ends part-way through a batch.
    monkeypatch.setattr(batch_engine, "RANGES_PER_STEP", 2)
    readers = [make_subscriber(f"r{i}@example.com") for i in range(28)]
    for i in suppressed:
        Suppression.objects.create(email_hmac=readers[i].email_hmac, reason="bounced")
    batches = publish_and_cut(alert, batch_size=4, settings=settings)

    members = [r.pk for i, r in enumerate(readers) if i not in suppressed]
    in_range = [[pk for pk in members if b.first_subscriber_id <= pk <= b.last_subscriber_id] for b in batches]
    assert [pk for batch in in_range for pk in batch] == members  # each member in one batch, in order
    assert [b.planned_count for b in batches] == [len(batch) for batch in in_range]
    assert all(n == 4 for n in (b.planned_count for b in batches[:-1]))
    assert all(a.last_subscriber_id < b.first_subscriber_id for a, b in itertools.pairwise(batches))
    send_all(batches)
    assert sorted(mailgun.recipient_counts()) == sorted(f"r{i}@example.com" for i in range(28) if i not in suppressed)
    assert max(mailgun.recipient_counts().values()) == 1


def test_a_send_that_dies_with_the_database_stops_renewing_its_lease(alert, settings, mailgun, monkeypatch):
    from django.db import OperationalError

    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    monkeypatch.setattr(batch_engine.keeper, "enabled", True)
    alive = type("Alive", (), {"is_alive": lambda self: True})()
    monkeypatch.setattr(batch_engine.keeper, "_thread", alive)  # no thread: only what it holds is watched

    def database_gone(batch):
        assert batch_engine.keeper._held  # held while it sends
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(fanout, "_send", database_gone)
    with pytest.raises(OperationalError):
        fanout.batch_send(batch_id=batch.pk)
    assert batch_engine.keeper._held == {}  # its lease runs out, and another worker takes it over
