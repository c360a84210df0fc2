"""Digests fail over to the second provider as alerts do: the fake Mailgun as the
primary, another provider's fake as EMAIL_BACKEND_FALLBACK, through the real anymail
backends; each reader still gets one digest, and each batch says who sent it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.common.tokens import link_tokens
from alerts.digests.schedule import digest_tick
from alerts.digests.send import digest_batch_send
from alerts.models import Batch, Delivery, DigestRun, Subscriber, Topic
from alerts.sending.batches import RetryLater
from tests.factories import make_subscriber, published
from tests.fakes.amazon_ses import FakeAmazonSES
from tests.helpers import (
    LONDON_7AM,
    Worker,
    digest_recipients,
    fallback_env,
    tick,
    use_fallback,
    wait_until,
    worker_env,
)
from tests.observability.conftest import METRICS_TOKEN, samples, value

pytestmark = pytest.mark.usefixtures("clean_failover_record")

SES = "anymail.backends.amazon_ses.EmailBackend"


def london_reader(email: str, *topics: Topic) -> Subscriber:
    reader = make_subscriber(email, frequency=Subscriber.Frequency.DAILY, time_zone="Europe/London",
                             confirmed_at=timezone.now() - timedelta(days=30))
    reader.topics.set(topics)
    return reader


def send_again(batch: Batch) -> str:
    """The batch's retry, due now."""
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    return digest_batch_send(batch_id=batch.pk)


def providers(run: DigestRun) -> set[str]:
    return set(Batch.objects.filter(digest_run=run).values_list("provider", flat=True))


def use_ses(settings, ses: FakeAmazonSES, *, as_fallback: bool) -> None:
    if as_fallback:
        settings.EMAIL_BACKEND_FALLBACK = SES
    else:
        settings.EMAIL_BACKEND = SES
    settings.ANYMAIL = {**settings.ANYMAIL, "AMAZON_SES_CLIENT_PARAMS": {
        "endpoint_url": ses.api_url, "region_name": "eu-west-1", "aws_access_key_id": ses.api_key,
        "aws_secret_access_key": "fake-secret"}}


# --- One batch at a time, in process ---------------------------------------------------

@pytest.mark.django_db
def test_with_the_primary_healthy_digests_go_through_it_and_the_batch_says_so(mailgun, settings, fake_sendgrid):
    use_fallback(settings, fake_sendgrid)
    london_reader("ann@example.com")
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    run = DigestRun.objects.get()
    assert digest_recipients(mailgun) == ["ann@example.com"] and fake_sendgrid.total_recipients == 0
    assert run.failover_at is None and run.status == DigestRun.Status.SENT
    assert providers(run) == {"Mailgun"}


@pytest.mark.django_db
def test_a_batch_the_primary_fails_part_way_is_finished_by_the_fallback_each_reader_once(
        client, mailgun, settings, fake_sendgrid):
    """Two readers with different digests are two calls: the first gets through the
    primary, which then fails; the retry sends the second reader alone, through the
    fallback, and the waiting batch is labelled by the fallback that finished it."""
    use_fallback(settings, fake_sendgrid)
    settings.FAILOVER_AFTER_SECONDS, settings.METRICS_TOKEN = 0, METRICS_TOKEN
    before = samples(client)
    world, sport = Topic.objects.create(name="World", slug="world"), Topic.objects.create(name="Sport", slug="sport")
    london_reader("ann@example.com", world)
    london_reader("bob@example.com", sport)
    published("World story", LONDON_7AM - timedelta(hours=3), world)
    published("Sport story", LONDON_7AM - timedelta(hours=2), sport)
    digest_tick(now=LONDON_7AM)
    batch = Batch.objects.get()
    mailgun.fail_after_recipients(1)
    with pytest.raises(RetryLater):
        digest_batch_send(batch_id=batch.pk)
    run = DigestRun.objects.get()
    assert run.failover_at is not None
    assert send_again(batch) == Batch.Status.SENT
    assert digest_recipients(mailgun) == ["ann@example.com"]
    assert fake_sendgrid.recipient_counts() == {"bob@example.com": 1}
    assert "Sport story" in fake_sendgrid.messages[0].text
    assert providers(run) == {"SendGrid"}
    assert set(Delivery.objects.filter(digest_run=run).values_list("status", flat=True)) == {Delivery.Status.SENT}
    run.refresh_from_db()
    assert run.status == DigestRun.Status.SENT
    # The metrics count each call under the provider it went to.
    scraped = samples(client)
    for provider, outcome in (("mailgun", "sent"), ("mailgun", "retried"), ("sendgrid", "sent")):
        grew = (value(scraped, "stoppress_emails_total", provider=provider, kind="digest", outcome=outcome)
                - value(before, "stoppress_emails_total", provider=provider, kind="digest", outcome=outcome))
        assert grew == 1, (provider, outcome)


@pytest.mark.django_db
def test_429s_fail_a_digest_over_only_after_the_longer_delay(mailgun, settings, fake_sendgrid):
    use_fallback(settings, fake_sendgrid)
    settings.FAILOVER_AFTER_SECONDS, settings.FAILOVER_AFTER_RATE_LIMITED_SECONDS = 0, 120
    london_reader("ann@example.com")
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    digest_tick(now=LONDON_7AM)
    batch = Batch.objects.get()
    mailgun.fail_next(1, status=429, retry_after=1)
    with pytest.raises(RetryLater):
        digest_batch_send(batch_id=batch.pk)
    assert DigestRun.objects.get().failover_at is None  # the primary is up, only busy
    mailgun.fail_next(1, status=503)
    with pytest.raises(RetryLater):
        send_again(batch)
    assert DigestRun.objects.get().failover_at is not None
    assert send_again(batch) == Batch.Status.SENT
    assert fake_sendgrid.recipient_counts() == {"ann@example.com": 1} and mailgun.total_recipients == 0


@pytest.mark.django_db
def test_amazon_ses_as_the_fallback_sends_each_reader_their_own_digest_without_a_template(mailgun, settings):
    settings.FAILOVER_AFTER_SECONDS = 0
    ann, bob = london_reader("ann@example.com"), london_reader("bob@example.com")
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    with FakeAmazonSES() as ses:
        use_ses(settings, ses, as_fallback=True)
        digest_tick(now=LONDON_7AM)
        batch = Batch.objects.get()
        mailgun.fail_after_recipients(0)
        with pytest.raises(RetryLater):
            digest_batch_send(batch_id=batch.pk)
        assert send_again(batch) == Batch.Status.SENT
        messages = {m.recipient: m for m in ses.messages}
        assert ses.stats()["calls"] == 2 and not ses.templates  # one message each
    assert set(messages) == {"ann@example.com", "bob@example.com"} and mailgun.total_recipients == 0
    for reader in (ann, bob):
        message = messages[reader.email]
        assert "Missiles fired" in message.text and "Missiles fired" in message.html
        token = message.header("List-Unsubscribe").strip("<>").rstrip("/").rsplit("/", 1)[-1]
        assert link_tokens.read_for_unsubscribe(token) == reader.pk
        assert message.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert providers(batch.digest_run) == {"Amazon SES"}
    rows = dict(Delivery.objects.filter(digest_run=batch.digest_run).values_list("subscriber__email", "message_id"))
    assert rows == {email: message.message_id for email, message in messages.items()}


@pytest.mark.django_db
def test_a_failing_amazon_ses_primary_fails_its_digests_over_too(mailgun, settings, fake_sendgrid):
    """SES digests go one message per reader; a 503 to each fails over as a batch call's does."""
    use_fallback(settings, fake_sendgrid)
    settings.FAILOVER_AFTER_SECONDS = 0
    london_reader("ann@example.com")
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    with FakeAmazonSES() as ses:
        use_ses(settings, ses, as_fallback=False)
        ses.fail_after_recipients(0)
        digest_tick(now=LONDON_7AM)
        batch = Batch.objects.get()
        with pytest.raises(RetryLater):
            digest_batch_send(batch_id=batch.pk)
        assert send_again(batch) == Batch.Status.SENT
        assert ses.total_recipients == 0 and ses.stats()["rejected"] == 1  # boto3 does not retry it itself
    assert fake_sendgrid.recipient_counts() == {"ann@example.com": 1}
    assert providers(batch.digest_run) == {"SendGrid"}


# --- Through a real worker -------------------------------------------------------------

READERS = 500


@pytest.fixture
def digest_failover_worker(transactional_db, fake_mailgun, fake_sendgrid, broker_redis, tmp_path):
    broker_redis.flushdb()
    fake_mailgun.reset()
    worker = Worker(worker_env(fake_mailgun, **fallback_env(fake_sendgrid)), tmp_path / "worker.log").start()
    yield worker
    worker.stop()


def wait_for_run(at) -> DigestRun:
    """Start the digest runs due at `at` (the workers send them); the one run, finished."""
    run_id, = digest_tick(now=at)

    def finished():
        run = DigestRun.objects.get(pk=run_id)
        return run if run.status != DigestRun.Status.SENDING else None
    return wait_until(finished, timeout=60, message="the digest run did not finish")


@pytest.mark.worker
def test_a_primary_failing_from_the_start_sends_every_digest_through_the_fallback_once(
        digest_failover_worker, fake_mailgun, fake_sendgrid, settings):
    settings.FANOUT_BATCH_SIZE = 100  # the tick cuts here: 5 batches
    readers = {london_reader(f"reader{i}@example.com").email for i in range(READERS)}
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    fake_mailgun.fail_after_recipients(0)  # 503 to every call
    run = wait_for_run(LONDON_7AM)
    counts = fake_sendgrid.recipient_counts()
    assert set(counts) == readers and max(counts.values()) == 1, "everyone once, through the fallback"
    assert fake_mailgun.total_recipients == 0 and fake_mailgun.rejected >= 1
    assert run.status == DigestRun.Status.SENT and run.failover_at is not None
    assert providers(run) == {"SendGrid"} and Batch.objects.filter(digest_run=run).count() == 5
    assert Delivery.objects.filter(digest_run=run, status=Delivery.Status.SENT).count() == READERS

    # The primary is back: the next day's run tries it first, and stays on it.
    fake_mailgun.fail_after_recipients(None)
    published("Talks resume", LONDON_7AM + timedelta(hours=20))
    second = wait_for_run(LONDON_7AM + timedelta(days=1))
    assert second.failover_at is None and second.status == DigestRun.Status.SENT
    assert providers(second) == {"Mailgun"}
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == readers and max(counts.values()) == 1
    assert fake_sendgrid.total_recipients == READERS
