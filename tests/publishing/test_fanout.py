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
