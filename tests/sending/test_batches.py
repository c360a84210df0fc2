"""Batches called directly: cutting the audience into ranges, claiming, leases, and
giving up after the last attempt."""

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


def test_a_batch_that_keeps_failing_is_marked_failed_and_the_alert_says_so(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(100, status=500)
    for _ in range(batch_engine.MAX_ATTEMPTS):
        with pytest.raises(batch_engine.RetryLater):
            fanout.batch_send(batch_id=batch.pk)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    alert.refresh_from_db()
    assert alert.status == Alert.Status.FAILED
    assert alert_progress(alert).batches_failed == 1


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
