"""Retention jobs: unconfirmed signups and old delivery records are purged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from alerts.common.consent import RequestMeta, record_consent
from alerts.models import Batch, ConsentEvent, Delivery, Subscriber, TrackingEvent
from alerts.rights import retention
from alerts.tasks import purge_old_deliveries, purge_unconfirmed
from tests.factories import make_delivery, make_subscriber

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


def test_unconfirmed_signups_are_purged_after_the_retention_period(settings):
    settings.UNCONFIRMED_RETENTION_DAYS = 7
    stale = make_subscriber("stale@example.com", status=Subscriber.Status.PENDING, created_at=days_ago(8))
    record_consent(subscriber=stale, purpose="alerts", action="requested", source="web", meta=RequestMeta())
    fresh = make_subscriber("fresh@example.com", status=Subscriber.Status.PENDING, created_at=days_ago(6))
    confirmed = make_subscriber("old@example.com", created_at=days_ago(400))
    assert purge_unconfirmed.delay().get() == 1
    assert set(Subscriber.objects.values_list("pk", flat=True)) == {fresh.pk, confirmed.pk}
    assert not ConsentEvent.objects.filter(subscriber_id=stale.pk).exists()


def test_a_once_confirmed_reader_awaiting_reconfirmation_keeps_their_history(settings):
    returning = make_subscriber("back@example.com", status=Subscriber.Status.PENDING,
                                created_at=days_ago(30), confirmed_at=days_ago(300))
    assert retention.purge_unconfirmed() == 0
    assert Subscriber.objects.filter(pk=returning.pk).exists()


def test_the_unconfirmed_period_is_configurable(settings):
    settings.UNCONFIRMED_RETENTION_DAYS = 2
    make_subscriber("a@example.com", status=Subscriber.Status.PENDING, created_at=days_ago(3))
    assert retention.purge_unconfirmed() == 1


def test_purging_deletes_in_chunks_and_is_safe_to_repeat(settings, monkeypatch):
    monkeypatch.setattr(retention, "CHUNK", 2)
    Subscriber.objects.bulk_create([
        Subscriber(email=f"p{i}@example.com", email_hmac=f"{i:064d}", created_at=days_ago(10))
        for i in range(5)])
    assert retention.purge_unconfirmed() == 5
    assert retention.purge_unconfirmed() == 0


def test_old_delivery_records_and_provider_events_are_purged(settings):
    settings.DELIVERY_RETENTION_DAYS = 90
    alice = make_subscriber()
    old = make_delivery(alice, sent_at=days_ago(91), headline="Old")
    recent = make_delivery(alice, sent_at=days_ago(89), headline="Recent")
    TrackingEvent.objects.create(event_id="old", event_type="delivered", occurred_at=days_ago(91))
    TrackingEvent.objects.create(event_id="new", event_type="delivered", occurred_at=days_ago(1))
    assert purge_old_deliveries.delay().get() == 1
    assert list(Delivery.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Delivery.objects.filter(pk=old.pk).exists()
    assert list(TrackingEvent.objects.values_list("event_id", flat=True)) == ["new"]
    assert Subscriber.objects.filter(pk=alice.pk).exists()


def test_reserved_rows_never_sent_are_purged_by_their_batchs_age(settings):
    settings.DELIVERY_RETENTION_DAYS = 90
    alice = make_subscriber()
    stuck, fresh = make_delivery(alice, headline="Stuck"), make_delivery(alice, headline="Fresh")
    Delivery.objects.filter(pk__in=[stuck.pk, fresh.pk]).update(status="pending", sent_at=None)
    Batch.objects.filter(pk=stuck.batch_id).update(created_at=days_ago(91))
    assert retention.purge_old_deliveries() == 1
    assert list(Delivery.objects.values_list("pk", flat=True)) == [fresh.pk]


def test_the_purge_tasks_have_stable_names_and_the_link_email_its_queue():
    assert {"alerts.purge_unconfirmed", "alerts.purge_old_deliveries",
            "alerts.send_preferences_link"} <= set(current_app.tasks)
    assert current_app.amqp.router.route({}, "alerts.send_preferences_link")["queue"].name == "transactional"


def test_a_backlog_is_purged_in_bounded_runs_that_catch_up(settings, monkeypatch):
    settings.DELIVERY_RETENTION_DAYS = 90
    monkeypatch.setattr(retention, "CHUNK", 2)
    alice = make_subscriber()
    old = [make_delivery(alice, sent_at=days_ago(100 + n), headline=f"Old {n}") for n in range(5)]
    recent = make_delivery(alice, sent_at=days_ago(1), headline="Recent")
    assert retention.purge_old_deliveries(seconds=0) == 0  # out of time at once: nothing lost
    assert retention.old_deliveries_remain()
    assert retention.purge_old_deliveries() == len(old)
    assert not retention.old_deliveries_remain()
    assert list(Delivery.objects.values_list("pk", flat=True)) == [recent.pk]


def test_the_purge_task_queues_its_next_run_while_a_backlog_remains(settings, monkeypatch):
    settings.DELIVERY_RETENTION_DAYS = 90
    alice = make_subscriber()
    for n in range(3):
        make_delivery(alice, sent_at=days_ago(100 + n), headline=f"Old {n}")
    runs = []

    def one_row_a_run(**kwargs):  # a run that runs out of time after one batch
        runs.append(1)
        batch = Batch.objects.filter(created_at__lt=days_ago(90), purged_at__isnull=True).order_by("pk").first()
        Delivery.objects.filter(batch=batch).delete()
        Batch.objects.filter(pk=batch.pk).update(purged_at=timezone.now())
        return 1

    monkeypatch.setattr(retention, "purge_old_deliveries", one_row_a_run)
    purge_old_deliveries.delay()
    assert len(runs) == 3  # each run queued the next while old rows remained
    assert not Delivery.objects.exists()


def test_a_purged_batch_is_never_looked_at_again(settings, django_assert_max_num_queries):
    settings.DELIVERY_RETENTION_DAYS = 90
    alice = make_subscriber()
    old = [make_delivery(alice, sent_at=days_ago(100 + n), headline=f"Old {n}") for n in range(6)]
    assert retention.purge_old_deliveries() == len(old)
    assert Batch.objects.filter(purged_at__isnull=False).count() == len(old)
    with django_assert_max_num_queries(4):  # no query per old batch: they are done
        assert retention.purge_old_deliveries() == 0



def test_consent_requests_are_purged_with_the_unconfirmed_signups(settings):
    from alerts.models import ConsentRequest
    from alerts.signup.services import signup_request

    settings.UNCONFIRMED_RETENTION_DAYS = 7
    old = signup_request(email="old@example.com", marketing=False, source="web", meta=RequestMeta(ip="203.0.113.9"))
    ConsentRequest.objects.filter(pk=old).update(created_at=days_ago(8))
    fresh = signup_request(email="new@example.com", marketing=False, source="web", meta=RequestMeta())
    retention.purge_unconfirmed()
    assert list(ConsentRequest.objects.values_list("pk", flat=True)) == [fresh]
