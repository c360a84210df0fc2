"""The providers that take one message a call (Postal, Scaleway, MailerSend), through
the real anymail backend against a fake of each one's HTTP API: every reader one
message with their own links and List-Unsubscribe, the provider's id for each reader
in the ledger, and a failure part-way resending nobody already accepted."""

from __future__ import annotations

import pytest
from django.utils import timezone

from alerts.models import Batch, Delivery, Subscriber
from alerts.publishing import fanout
from alerts.sending import batches as batch_engine
from alerts.sending.provider import sending_profile
from tests.factories import make_subscriber
from tests.fakes.mailersend import FakeMailerSend
from tests.fakes.postal import FakePostal
from tests.fakes.scaleway import FakeScaleway
from tests.helpers import READER_LINK, fake_provider, link_owner, publish_and_cut, send_all

pytestmark = pytest.mark.django_db

# esp_name -> (fake, backend module, ANYMAIL settings for the fake)
PROVIDERS = {
    "Postal": (FakePostal, "postal", lambda f: {"POSTAL_API_KEY": f.api_key, "POSTAL_API_URL": f.api_url}),
    "Scaleway": (FakeScaleway, "scaleway", lambda f: {"SCALEWAY_SECRET_KEY": f.api_key,
                                                      "SCALEWAY_PROJECT_ID": "11111111-2222-3333-4444-555555555555",
                                                      "SCALEWAY_API_URL": f.api_url}),
    "MailerSend": (FakeMailerSend, "mailersend",
                   lambda f: {"MAILERSEND_API_TOKEN": f.api_key, "MAILERSEND_API_URL": f.api_url}),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request, settings):
    yield from fake_provider(settings, PROVIDERS, request.param)


def test_each_reader_gets_one_message_of_their_own(alert, settings, provider):
    for i in range(30):
        make_subscriber(f"r{i}@example.com")
    profile = sending_profile()
    assert profile.esp_name == provider.esp_name and not profile.provider.batched
    send_all(publish_and_cut(alert, settings=settings))
    ids = dict(Subscriber.objects.values_list("email", "pk"))
    assert provider.stats()["calls"] == 30
    assert sorted(m.recipient for m in provider.messages) == sorted(ids)
    for message in provider.messages:
        own = ids[message.recipient]
        assert message.subject == "Missiles fired <b>hours</b> before summit"
        assert "&lt;b&gt;hours&lt;/b&gt;" in message.html
        for part in (message.html, message.text):
            tokens = READER_LINK.findall(part)
            assert tokens and {link_owner(t) for t in tokens} == {own}
        assert link_owner(READER_LINK.fullmatch(message.header("List-Unsubscribe").strip("<>"))[1]) == own
        assert message.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        assert "breaking-news.news.example.com" in message.header("List-Id")


def test_the_ledger_keeps_the_providers_id_for_each_reader(alert, settings, provider):
    for i in range(5):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, settings=settings))
    by_reader = {m.recipient: m.message_id for m in provider.messages}
    rows = {row.subscriber.email: row for row in Delivery.objects.select_related("subscriber")}
    assert len(rows) == 5 and {row.status for row in rows.values()} == {Delivery.Status.SENT}
    # The id the provider's webhooks will name: Postal's number, Scaleway's email id,
    # MailerSend's X-Message-Id.
    assert {email: row.message_id for email, row in rows.items()} == by_reader
    assert len(set(by_reader.values())) == 5


def test_a_failure_part_way_keeps_who_was_sent_and_the_retry_sends_the_rest(alert, settings, provider):
    settings.EMAIL_CONNECTIONS = 1  # one connection: the readers go in order
    for i in range(100):
        make_subscriber(f"r{i}@example.com")
    [batch] = publish_and_cut(alert, settings=settings)  # one batch of 100
    provider.fail_after_recipients(60, status=503)
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    # The first round of 50 went into the ledger as it ended; the second's 10 with the failure.
    assert Delivery.objects.filter(status=Delivery.Status.SENT).count() == 60
    provider.fail_after_recipients(None)
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    counts = provider.recipient_counts()
    assert len(counts) == 100 and set(counts.values()) == {1}


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried(alert, settings, provider, status):
    make_subscriber("a@example.com")
    make_subscriber("b@example.com")
    batch = publish_and_cut(alert, settings=settings)[0]
    provider.fail_next(1, status=status, retry_after=3)
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.PENDING
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert provider.recipient_counts() == {"a@example.com": 1, "b@example.com": 1}


def test_a_request_refused_outright_fails_the_batch_without_a_retry(alert, settings, provider):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    provider.fail_next(1, status=400)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    assert Delivery.objects.get().status == Delivery.Status.FAILED
    assert provider.stats()["calls"] == 0
