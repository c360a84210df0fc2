"""The fan-out engine called directly: audience, batching, claiming, ledger, errors."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import sweeper
from alerts.common.addresses import email_hmac
from alerts.models import Alert, Batch, Delivery, Subscriber, Suppression, Topic
from alerts.publishing import fanout
from alerts.publishing.audience import audience
from alerts.publishing.progress import alert_progress
from alerts.publishing.services import alert_publish, alert_stop
from alerts.sending import batches as batch_engine
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return Topic.objects.create(name="World", slug="world")


@pytest.fixture
def alert(world):
    alert = Alert.objects.create(headline="Missiles fired <b>hours</b> before summit",
                                 standfirst="Two launches & a meeting", url="https://news.example.com/a")
    return alert


def publish_and_cut(alert, batch_size=None, settings=None):
    if settings is not None and batch_size:
        settings.FANOUT_BATCH_SIZE = batch_size
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())
    fanout.alert_fan_out(alert_id=alert.pk)
    return list(Batch.objects.filter(alert=alert).order_by("first_subscriber_id"))


def send_all(batches):
    for batch in batches:
        fanout.batch_send(batch_id=batch.pk)


def test_the_audience_is_confirmed_unsuppressed_immediate_subscribers_of_the_topic(alert, world):
    sport = Topic.objects.create(name="Sport", slug="sport")
    alert.topics.set([world])
    everyone = make_subscriber("all-topics@example.com")
    follower = make_subscriber("world@example.com")
    follower.topics.set([world])
    other = make_subscriber("sport@example.com")
    other.topics.set([sport])
    make_subscriber("pending@example.com", status=Subscriber.Status.PENDING)
    make_subscriber("gone@example.com", status=Subscriber.Status.UNSUBSCRIBED)
    make_subscriber("digest@example.com", frequency=Subscriber.Frequency.DAILY)
    make_subscriber("bounced@example.com")
    Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    alert.published_at = timezone.now()
    assert set(audience(alert)) == {everyone, follower}


def test_subscribers_confirmed_after_publication_are_not_in_its_audience(alert):
    make_subscriber("early@example.com")
    alert.published_at = timezone.now()
    make_subscriber("late@example.com", confirmed_at=timezone.now() + timedelta(seconds=1))
    assert [s.email for s in audience(alert)] == ["early@example.com"]


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


def test_it_sends_one_personalised_copy_per_recipient_in_one_call(alert, settings, mailgun):
    for i in range(30):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, settings=settings))
    assert len(mailgun.calls) == 1
    call = mailgun.calls[0]
    assert sorted(call.recipients) == sorted(f"r{i}@example.com" for i in range(30))
    assert call.first("subject") == "Missiles fired <b>hours</b> before summit"
    assert "Missiles fired &lt;b&gt;hours&lt;/b&gt; before summit" in call.first("html")
    assert "%recipient.t%" in call.first("html") and "%recipient.t%" in call.first("text")
    variables = json.loads(call.first("recipient-variables"))
    tokens = {v["t"] for v in variables.values()}
    assert len(tokens) == 30
    assert call.first("h:List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    # Mailgun fills %recipient.t% in headers too: each copy gets its own link.
    assert call.first("h:List-Unsubscribe") == "<https://news.example.com/u/%recipient.t%/>"
    assert "breaking-news.news.example.com" in call.first("h:List-Id")


def test_the_ledger_records_every_recipient_with_the_provider_message_id(alert, settings, mailgun):
    for i in range(7):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, settings=settings))
    deliveries = Delivery.objects.filter(alert=alert)
    assert deliveries.count() == 7
    # One API call, one provider id: kept once, on the batch, and read through each row.
    assert {d.provider_message_id for d in deliveries.select_related("batch")} == {mailgun.calls[0].message_id}
    assert set(deliveries.values_list("message_id", flat=True)) == {""}
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SENT
    assert alert.first_handoff_at and alert.last_handoff_at and alert.finished_at


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


def test_unsubscribing_mid_send_skips_the_reader_in_later_batches(alert, settings, mailgun):
    for i in range(4):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, batch_size=2, settings=settings)
    fanout.batch_send(batch_id=batches[0].pk)
    Subscriber.objects.filter(email="r3@example.com").update(status=Subscriber.Status.UNSUBSCRIBED)
    fanout.batch_send(batch_id=batches[1].pk)
    assert "r3@example.com" not in mailgun.recipient_counts()
    assert Batch.objects.get(pk=batches[1].pk).skipped_count == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_provider_errors_release_the_batch_for_a_retry(alert, settings, mailgun, status):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(1, status=status, retry_after=7)
    with pytest.raises(batch_engine.RetryLater) as later:
        fanout.batch_send(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.PENDING and str(status) in batch.last_error
    if status == 429:
        assert later.value.countdown >= 7  # Retry-After honoured
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


def test_a_request_the_provider_refuses_outright_is_not_retried(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(1, status=400)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    assert Delivery.objects.get().status == Delivery.Status.FAILED


def test_stopping_an_alert_cancels_the_batches_not_yet_sent(alert, settings, mailgun):
    for i in range(6):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, batch_size=2, settings=settings)
    fanout.batch_send(batch_id=batches[0].pk)
    assert alert_stop(alert_id=alert.pk)
    send_all(batches[1:])
    assert mailgun.total_recipients == 2
    alert.refresh_from_db()
    assert alert.status == Alert.Status.CANCELLED
    assert alert_progress(alert).sent == 2


def test_smtp_sends_one_message_per_recipient_over_one_connection(alert, settings):
    from tests.fakes.smtp import FakeSMTP

    for i in range(5):
        make_subscriber(f"r{i}@example.com")
    with FakeSMTP() as smtp:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = smtp.host, smtp.port
        send_all(publish_and_cut(alert, settings=settings))
        assert smtp.connections == 1
        assert smtp.message_count == 5
        message = smtp.messages[0].parsed()
        assert message["List-Unsubscribe"].strip().startswith("<https://news.example.com/u/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    ids = set(Delivery.objects.values_list("message_id", flat=True))
    assert len(ids) == 5 and all(i.startswith("<") for i in ids)


def test_a_batch_overlapping_rows_already_in_the_ledger_still_records_everyone_once(alert, settings, mailgun):
    readers = [make_subscriber(f"r{i}@example.com") for i in range(4)]
    batch, = publish_and_cut(alert, settings=settings)
    # Say an earlier, overlapping cut of the audience already sent to the first reader:
    # that row stays as it was, and the batch still records the other three.
    earlier = Batch.objects.create(alert=alert, first_subscriber_id=-1, last_subscriber_id=readers[0].pk,
                                   status=Batch.Status.SENT, message_id="<earlier@mg>")
    Delivery.objects.create(alert=alert, batch=earlier, subscriber=readers[0], status="sent")
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    rows = Delivery.objects.filter(alert=alert).select_related("batch")
    assert sorted(r.subscriber_id for r in rows) == [r.pk for r in readers]
    assert {r.subscriber_id: r.provider_message_id for r in rows}[readers[0].pk] == "<earlier@mg>"
    assert {r.provider_message_id for r in rows if r.batch_id == batch.pk} == {mailgun.calls[0].message_id}
    batch.refresh_from_db()
    assert (batch.status, batch.sent_count) == (Batch.Status.SENT, 4)


def test_the_fan_out_query_count_does_not_grow_with_the_audience(alert, settings, mailgun,
                                                                  django_assert_max_num_queries):
    for i in range(40):
        make_subscriber(f"r{i}@example.com")
    batches = publish_and_cut(alert, settings=settings)
    with django_assert_max_num_queries(12):
        fanout.batch_send(batch_id=batches[0].pk)


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


def test_deleting_an_alert_deletes_its_batches_and_ledger_rows_only(alert, settings, mailgun):
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    other = Alert.objects.create(headline="Other", url="https://news.example.com/b")
    for sent in (alert, other):
        send_all(publish_and_cut(sent, settings=settings))
    assert Delivery.objects.count() == 6

    Alert.objects.get(pk=alert.pk).delete()

    assert set(Delivery.objects.values_list("alert_id", flat=True)) == {other.pk}
    assert Delivery.objects.count() == 3
    assert not Batch.objects.filter(alert_id=alert.pk).exists()


def test_the_worker_preload_covers_every_email_template():
    # Run by the worker before it forks its pool: a template it misses is loaded by
    # every pool process on its first send instead, and a renamed one fails here.
    from pathlib import Path

    from django.conf import settings

    from alerts.emails import EMAIL_TEMPLATES, preload

    preload()
    on_disk = {f"emails/{path.name}" for path in (Path(settings.BASE_DIR) / "templates" / "emails").iterdir()}
    assert set(EMAIL_TEMPLATES) == on_disk
