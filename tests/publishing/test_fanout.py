"""The fan-out called directly: cutting an alert's audience into batches once, and what
a batch send reads when it runs."""

from __future__ import annotations

import pytest

from alerts.models import Alert, Batch, Subscriber
from alerts.publishing import fanout
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut

pytestmark = pytest.mark.django_db


def test_it_cuts_the_audience_into_provider_sized_batches(alert, settings, mailgun):
    for i in range(25):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, batch_size=10, settings=settings)
    assert [b.planned_count for b in batches] == [10, 10, 5]
    ids = list(Subscriber.objects.order_by("pk").values_list("pk", flat=True))
    assert batches[0].first_subscriber_id == ids[0]
    assert batches[-1].last_subscriber_id == ids[-1]
    assert Alert.objects.get(pk=alert.pk).audience_size == 25


def test_fan_out_twice_cuts_each_range_once(alert, settings, mailgun):
    for i in range(12):
        make_subscriber(f"r{i}@example.com")
    publish_and_cut(alert, batch_size=5, settings=settings)
    Alert.objects.filter(pk=alert.pk).update(fanned_out_at=None)
    fanout.alert_fan_out(alert_id=alert.pk)
    assert Batch.objects.filter(alert=alert).count() == 3


def test_unsubscribing_mid_send_skips_the_reader_in_later_batches(alert, settings, mailgun):
    for i in range(4):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, batch_size=2, settings=settings)
    fanout.batch_send(batch_id=batches[0].pk)
    Subscriber.objects.filter(email="r3@example.com").update(status=Subscriber.Status.UNSUBSCRIBED)
    fanout.batch_send(batch_id=batches[1].pk)
    assert "r3@example.com" not in mailgun.recipient_counts()
    assert Batch.objects.get(pk=batches[1].pk).skipped_count == 1


def test_the_fan_out_query_count_does_not_grow_with_the_audience(alert, settings, mailgun,
                                                                  django_assert_max_num_queries):
    for i in range(40):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, settings=settings)
    with django_assert_max_num_queries(12):
        fanout.batch_send(batch_id=batches[0].pk)


def sending(alert, settings, batch_size):
    from django.utils import timezone

    settings.FANOUT_BATCH_SIZE = batch_size
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())


def test_a_second_walker_finds_the_cut_taken_and_cuts_nothing(alert, settings, mailgun):
    for i in range(12):
        make_subscriber(f"r{i}@example.com")
    sending(alert, settings, batch_size=5)
    live = fanout.CutLease.claim(alert.pk, "walker-1")  # a live walker, mid-cut
    assert live is not None
    assert fanout.alert_fan_out(alert_id=alert.pk, task_id="walker-2") == 0
    assert not Batch.objects.filter(alert=alert).exists()
    # The live walker's own redelivered task (its worker died) takes the cut back.
    assert fanout.alert_fan_out(alert_id=alert.pk, task_id="walker-1") == 3
    assert Alert.objects.get(pk=alert.pk).fanned_out_at is not None


def test_a_walker_whose_cut_was_taken_over_stops_writing(alert, settings, mailgun):
    from datetime import timedelta

    from django.utils import timezone

    for i in range(30):
        make_subscriber(f"r{i}@example.com")
    sending(alert, settings, batch_size=2)
    stale = fanout.CutLease.claim(alert.pk, "stale")
    Alert.objects.filter(pk=alert.pk).update(cut_lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert fanout.CutLease.claim(alert.pk, "fresh") is not None  # took over the lapsed lease
    with pytest.raises(fanout.CutLost):
        stale.renew()
    assert not stale.finish(fanned_out_at=timezone.now())
    assert Alert.objects.get(pk=alert.pk).fanned_out_at is None


def test_a_resumed_cut_first_queues_the_batches_committed_before_it(alert, settings, mailgun, eager_celery,
                                                                    django_capture_on_commit_callbacks):
    for i in range(6):
        make_subscriber(f"r{i}@example.com")
    settings.CELERY_TASK_ALWAYS_EAGER = False
    sending(alert, settings, batch_size=2)
    ids = list(Subscriber.objects.order_by("pk").values_list("pk", flat=True))
    # A walker committed the first batch and died before queueing it.
    Batch.objects.create(alert=alert, first_subscriber_id=ids[0], last_subscriber_id=ids[1], planned_count=2)
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with django_capture_on_commit_callbacks(execute=True):
        assert fanout.alert_fan_out(alert_id=alert.pk, task_id="resumed") == 2
    assert mailgun.total_recipients == 6 and max(mailgun.recipient_counts().values()) == 1
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.SENT
