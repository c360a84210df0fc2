"""Failover to a second provider: Mailgun (the fake, with its faults) as the primary,
another provider's fake as EMAIL_BACKEND_FALLBACK, through the real anymail backends."""

from __future__ import annotations

import time

import pytest
from anymail.backends.mailgun import EmailBackend as MailgunBackend
from django.utils import timezone

from alerts.models import Alert, Batch, Delivery
from alerts.publishing import fanout
from alerts.publishing.progress import alert_progress
from alerts.publishing.services import alert_publish
from alerts.sending import failover
from alerts.sending.batches import MAYBE_TWICE, RetryLater
from alerts.sending.provider import provider_label
from tests.factories import make_subscriber
from tests.fakes.mailjet import FakeMailjet
from tests.helpers import SENDGRID, Worker, fallback_env, publish_and_cut, send_all, use_fallback, worker_env
from tests.publishing.test_end_to_end import AUDIENCE, new_alert, seed, wait_for_finish

# The primary's health record is shared through Redis: each test starts afresh.
pytestmark = pytest.mark.usefixtures("clean_failover_record")


class MailgunTwin(MailgunBackend):
    """A second Mailgun account's backend, as a newsroom might configure one."""


# --- The primary's health record -------------------------------------------------------

def test_failing_time_adds_up_until_a_call_gets_through(mailgun, settings):
    settings.EMAIL_BACKEND_FALLBACK = SENDGRID
    assert failover.primary_failed() < 0.5
    time.sleep(0.3)
    assert 0.3 <= failover.primary_failed() < 1.5
    failover.primary_succeeded()
    assert failover.primary_failed() < 0.2


def test_failures_far_apart_are_not_an_outage(mailgun, settings):
    settings.EMAIL_BACKEND_FALLBACK = SENDGRID
    settings.FAILOVER_AFTER_SECONDS, settings.RETRY_MAX_DELAY_SECONDS = 0.1, 0.1
    failover.primary_failed()
    time.sleep(0.4)  # longer than the delay plus the longest retry wait: a new episode
    assert failover.primary_failed() < 0.2


def test_a_primary_known_to_be_down_fails_the_next_alert_over_at_once(mailgun, settings):
    settings.EMAIL_BACKEND_FALLBACK = SENDGRID
    failover.primary_failed()
    failover.mark_down()
    assert failover.seconds_left(failover.primary_failed(), rate_limited=False) == 0
    failover.primary_succeeded()  # back: the next alert waits the whole delay again
    assert failover.seconds_left(failover.primary_failed(), rate_limited=False) > 4


def test_429s_count_as_failing_only_after_the_longer_delay(settings):
    settings.FAILOVER_AFTER_SECONDS, settings.FAILOVER_AFTER_RATE_LIMITED_SECONDS = 10, 120
    assert failover.seconds_left(30, rate_limited=False) == 0
    assert failover.seconds_left(30, rate_limited=True) == 90


def test_the_fallback_is_named_apart_from_a_primary_of_the_same_kind(settings):
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    assert provider_label() == "Mailgun"
    assert provider_label(SENDGRID) == "SendGrid"
    assert provider_label(f"{__name__}.MailgunTwin") == "Mailgun (fallback)"


# --- Batches sent through the fallback, in process ---------------------------------------

@pytest.mark.django_db
def test_a_failed_over_alert_splits_batches_to_the_fallbacks_own_limit(alert, mailgun, settings):
    """Batches cut at Mailgun's size go to Mailjet (50 a call) in several calls, each
    reader once, the ledger saying who sent them."""
    for i in range(120):
        make_subscriber(f"r{i}@example.com")
    with FakeMailjet() as mailjet:
        settings.EMAIL_BACKEND_FALLBACK = "anymail.backends.mailjet.EmailBackend"
        settings.ANYMAIL = {**settings.ANYMAIL, "MAILJET_API_KEY": mailjet.api_key,
                            "MAILJET_SECRET_KEY": mailjet.secret_key, "MAILJET_API_URL": mailjet.api_url}
        batches = publish_and_cut(alert, batch_size=100, settings=settings)
        Alert.objects.filter(pk=alert.pk).update(failover_at=timezone.now())
        send_all(batches)
        counts = mailjet.recipient_counts()
    assert len(counts) == 120 and max(counts.values()) == 1
    assert mailgun.total_recipients == 0
    assert mailjet.stats()["calls"] == 3  # 100 = 50 + 50, then 20
    assert set(Batch.objects.filter(alert=alert).values_list("provider", flat=True)) == {"Mailjet"}
    assert Delivery.objects.filter(alert=alert, status=Delivery.Status.SENT).count() == 120


@pytest.mark.django_db
def test_without_a_fallback_a_failing_primary_is_retried_as_before(alert, mailgun, settings):
    for i in range(10):
        make_subscriber(f"r{i}@example.com")
    settings.EMAIL_BACKEND_FALLBACK = ""
    mailgun.fail_after_recipients(0)
    batches = publish_and_cut(alert, settings=settings)
    with pytest.raises(RetryLater):
        send_all(batches)
    batch = Batch.objects.get(alert=alert)
    assert batch.status == Batch.Status.PENDING and batch.waiting_since is not None
    alert.refresh_from_db()
    assert alert.failover_at is None


# --- Through a real worker -------------------------------------------------------------

@pytest.fixture
def failover_worker(transactional_db, fake_mailgun, fake_sendgrid, broker_redis, tmp_path):
    broker_redis.flushdb()
    fake_mailgun.reset()
    env = worker_env(fake_mailgun, **fallback_env(fake_sendgrid))
    worker = Worker(env, tmp_path / "worker.log").start()
    yield worker
    worker.stop()


@pytest.mark.worker
def test_primary_failing_after_30_percent_the_rest_goes_through_the_fallback_each_reader_once(
        failover_worker, fake_mailgun, fake_sendgrid):
    expected = seed()
    fake_mailgun.fail_after_recipients(int(AUDIENCE * 0.3))
    alert = new_alert()
    assert alert_publish(alert_id=alert.pk)
    alert = wait_for_finish(alert, timeout=90)

    primary, fallback = fake_mailgun.recipient_counts(), fake_sendgrid.recipient_counts()
    assert not set(primary) & set(fallback), "nobody through both"
    assert set(primary) | set(fallback) == expected, "nobody missing, nobody unexpected"
    assert max([*primary.values(), *fallback.values()]) == 1, "nobody twice"
    assert len(primary) >= AUDIENCE * 0.3 and len(fallback) >= AUDIENCE * 0.5
    assert alert.status == Alert.Status.SENT and alert.failover_at is not None
    # The ledger and the progress page say who sent whom.
    assert set(Batch.objects.filter(alert=alert).values_list("provider", flat=True)) == {"Mailgun", "SendGrid"}
    progress = alert_progress(alert)
    assert progress.sent_by_provider == {"Mailgun": len(primary), "SendGrid": len(fallback)}
    assert progress.sent == AUDIENCE and progress.failover
    sent_by_sendgrid = set(Delivery.objects.filter(alert=alert, batch__provider="SendGrid")
                           .values_list("subscriber__email", flat=True))
    assert sent_by_sendgrid == set(fallback)

    # The primary is still down: the next alert fails over after its first failed call,
    # not after the whole delay again.
    rejected = fake_mailgun.rejected
    second = Alert.objects.create(headline="Second alert")
    second.topics.set(alert.topics.all())
    alert_publish(alert_id=second.pk)
    second = wait_for_finish(second, timeout=60)
    assert second.failover_at is not None
    assert fake_mailgun.rejected - rejected <= failover_worker.concurrency + 1
    assert sum(fake_sendgrid.recipient_counts().values()) == len(fallback) + AUDIENCE

    # The primary is back: new alerts go to it again.
    fake_mailgun.fail_after_recipients(None)
    third = Alert.objects.create(headline="Third alert")
    third.topics.set(alert.topics.all())
    alert_publish(alert_id=third.pk)
    third = wait_for_finish(third, timeout=60)
    assert third.failover_at is None and third.status == Alert.Status.SENT
    assert set(Batch.objects.filter(alert=third).values_list("provider", flat=True)) == {"Mailgun"}
    assert sum(fake_mailgun.recipient_counts().values()) == len(primary) + AUDIENCE


@pytest.mark.django_db
def test_the_progress_page_says_which_provider_sent_how_many(client, publisher, alert, mailgun, settings,
                                                            fake_sendgrid):
    use_fallback(settings, fake_sendgrid)
    for i in range(5):
        make_subscriber(f"r{i}@example.com")
    first, second = publish_and_cut(alert, batch_size=3, settings=settings)
    send_all([first])
    Alert.objects.filter(pk=alert.pk).update(failover_at=timezone.now())
    send_all([second])
    data = client.get(f"/admin/alerts/alert/{alert.pk}/progress.json").json()
    assert data["sent_by_provider"] == {"Mailgun": 3, "SendGrid": 2}
    assert data["sent_by"] == "Mailgun 3 · SendGrid 2" and data["failover"].startswith("at ")
    page = client.get(f"/admin/alerts/alert/{alert.pk}/progress/").content.decode()
    assert "Sent by provider" in page and "Mailgun 3 · SendGrid 2" in page


@pytest.mark.django_db
def test_a_batch_the_primary_may_have_taken_goes_through_the_fallback_once_and_says_so(
        alert, mailgun, settings, fake_sendgrid):
    """A call that timed out after it went out may have been accepted: once the alert has
    failed over, its one resend is through the fallback, and its readers are flagged."""
    settings.EMAIL_BACKEND_FALLBACK = SENDGRID
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3, "SENDGRID_API_KEY": fake_sendgrid.api_key,
                        "SENDGRID_API_URL": fake_sendgrid.api_url}
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.set_delay(0.8)  # Mailgun takes the call, but answers too late
    with pytest.raises(RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    mailgun.set_delay(0)
    Alert.objects.filter(pk=alert.pk).update(failover_at=timezone.now())
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert len(fake_sendgrid.recipient_counts()) == 3
    assert set(Delivery.objects.filter(alert=alert).values_list("error", flat=True)) == {MAYBE_TWICE}
    assert Batch.objects.get(pk=batch.pk).provider == "SendGrid"
    assert alert_progress(Alert.objects.get(pk=alert.pk)).maybe_twice == 3
    time.sleep(0.7)  # Mailgun accepts the timed-out call late: before the next test
    assert mailgun.total_recipients == 3
    mailgun.reset()
