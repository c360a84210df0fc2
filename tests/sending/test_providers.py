"""Every batch-capable provider, through the real anymail backend against a fake of its
HTTP API: one call per batch, each reader their own links and List-Unsubscribe, the
ledger keeping the provider's message ids, and its errors sorted into retry or not."""

from __future__ import annotations

import math

import pytest
from django.utils import timezone

from alerts.models import Batch, Delivery, Subscriber
from alerts.publishing import fanout
from alerts.sending import batches as batch_engine
from alerts.sending.profiles import PER_CALL, PROFILES, PROVIDER
from tests.factories import make_subscriber
from tests.fakes.amazon_ses import FakeAmazonSES
from tests.fakes.brevo import FakeBrevo
from tests.fakes.mailjet import FakeMailjet
from tests.fakes.mailtrap import FakeMailtrap
from tests.fakes.mandrill import FakeMandrill
from tests.fakes.postmark import FakePostmark
from tests.fakes.resend import FakeResend
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.sparkpost import FakeSparkPost
from tests.fakes.unisender_go import FakeUnisenderGo
from tests.helpers import READER_LINK, fake_provider, link_owner, publish_and_cut, send_all

pytestmark = pytest.mark.django_db

# esp_name -> (fake, backend module, ANYMAIL settings for the fake)
PROVIDERS = {
    "SendGrid": (FakeSendGrid, "sendgrid", lambda f: {"SENDGRID_API_KEY": f.api_key, "SENDGRID_API_URL": f.api_url}),
    "Postmark": (FakePostmark, "postmark",
                 lambda f: {"POSTMARK_SERVER_TOKEN": f.api_key, "POSTMARK_API_URL": f.api_url}),
    "Mandrill": (FakeMandrill, "mandrill", lambda f: {"MANDRILL_API_KEY": f.api_key, "MANDRILL_API_URL": f.api_url}),
    "Mailjet": (FakeMailjet, "mailjet", lambda f: {"MAILJET_API_KEY": f.api_key, "MAILJET_SECRET_KEY": f.secret_key,
                                                   "MAILJET_API_URL": f.api_url}),
    "SparkPost": (FakeSparkPost, "sparkpost",
                  lambda f: {"SPARKPOST_API_KEY": f.api_key, "SPARKPOST_API_URL": f.api_url}),
    "Brevo": (FakeBrevo, "brevo", lambda f: {"BREVO_API_KEY": f.api_key, "BREVO_API_URL": f.api_url}),
    "Unisender Go": (FakeUnisenderGo, "unisender_go",
                     lambda f: {"UNISENDER_GO_API_KEY": f.api_key, "UNISENDER_GO_API_URL": f.api_url}),
    "Resend": (FakeResend, "resend", lambda f: {"RESEND_API_KEY": f.api_key, "RESEND_API_URL": f.api_url}),
    "Mailtrap": (FakeMailtrap, "mailtrap",
                 lambda f: {"MAILTRAP_API_TOKEN": f.api_key, "MAILTRAP_API_URL": f.api_url}),
    "Amazon SES": (FakeAmazonSES, "amazon_ses", lambda f: {"AMAZON_SES_CLIENT_PARAMS": {
        "endpoint_url": f.api_url, "region_name": "eu-west-1", "aws_access_key_id": f.api_key,
        "aws_secret_access_key": "fake-secret"}}),
}
READERS = 120


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request, settings):
    yield from fake_provider(settings, PROVIDERS, request.param)


def test_each_batch_is_one_call_and_each_reader_gets_their_own_links(alert, settings, provider):
    for i in range(READERS):
        make_subscriber(f"r{i}@example.com")
    profile = PROFILES[provider.esp_name]
    batches = publish_and_cut(alert, settings=settings)
    send_all(batches)
    assert len(batches) == math.ceil(READERS / profile.batch_size)
    # A batch is one call, or several of at most the provider's limit (Mailjet's 50).
    assert provider.stats()["calls"] == math.ceil(READERS / min(profile.batch_size, profile.recipient_limit))
    ids = dict(Subscriber.objects.values_list("email", "pk"))
    messages = provider.messages
    assert sorted(m.recipient for m in messages) == sorted(ids)
    for message in messages:
        own = ids[message.recipient]
        assert message.subject == "Missiles fired <b>hours</b> before summit"
        assert "&lt;b&gt;hours&lt;/b&gt;" in message.html
        # Every link in both parts is the reader's own, and no merge field is left.
        for part in (message.html, message.text):
            tokens = READER_LINK.findall(part)
            assert tokens and {link_owner(t) for t in tokens} == {own}
            assert profile.merge_field.format("t") not in part
        if profile.unsubscribe == PROVIDER:
            assert message.header("List-Unsubscribe") is None
        else:
            header = message.header("List-Unsubscribe")
            assert link_owner(READER_LINK.fullmatch(header.strip("<>"))[1]) == own
            assert message.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        assert "breaking-news.news.example.com" in message.header("List-Id")


def test_the_ledger_keeps_each_readers_message_id(alert, settings, provider):
    for i in range(7):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, settings=settings))
    profile = PROFILES[provider.esp_name]
    rows = {row.subscriber.email: row for row in Delivery.objects.select_related("subscriber", "batch")}
    assert len(rows) == 7 and all(row.status == Delivery.Status.SENT for row in rows.values())
    by_reader = {m.recipient: m.message_id for m in provider.messages}
    assert len(set(by_reader.values())) == (1 if profile.message_ids == PER_CALL else 7)
    for email, row in rows.items():
        kept = row.message_id or row.batch.message_id
        assert kept == by_reader[email] and kept


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried_and_send_each_reader_once(alert, settings, provider, status):
    make_subscriber("a@example.com")
    make_subscriber("b@example.com")
    batch = publish_and_cut(alert, settings=settings)[0]
    provider.fail_next(1, status=status, retry_after=3)
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.PENDING and str(status) in batch.last_error
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert provider.recipient_counts() == {"a@example.com": 1, "b@example.com": 1}


def test_a_request_refused_outright_fails_the_batch_without_a_retry(alert, settings, provider):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    provider.fail_next(1, status=400)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    assert Delivery.objects.get().status == Delivery.Status.FAILED


def test_a_batch_of_several_calls_resends_nobody_after_a_call_fails_part_way(alert, settings):
    fake_class, module, anymail = PROVIDERS["Mailjet"]
    with fake_class() as mailjet:
        settings.EMAIL_BACKEND = f"anymail.backends.{module}.EmailBackend"
        settings.ANYMAIL = {**settings.ANYMAIL, **anymail(mailjet)}
        for i in range(120):
            make_subscriber(f"r{i}@example.com")
        [batch] = publish_and_cut(alert, settings=settings)  # three calls of at most 50
        mailjet.fail_after_recipients(50, status=503)
        with pytest.raises(batch_engine.RetryLater):
            fanout.batch_send(batch_id=batch.pk)
        # The first call's readers are in the ledger already; the retry sends the rest.
        assert Delivery.objects.filter(status=Delivery.Status.SENT).count() == 50
        mailjet.fail_after_recipients(None)
        Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
        assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
        counts = mailjet.recipient_counts()
        assert len(counts) == 120 and set(counts.values()) == {1}
        assert mailjet.stats()["calls"] == 3


def test_amazon_ses_sends_50_a_call_from_one_template_per_alert_deleted_when_it_is_done(alert, settings):
    fake_class, module, anymail = PROVIDERS["Amazon SES"]
    with fake_class() as ses:
        settings.EMAIL_BACKEND = f"anymail.backends.{module}.EmailBackend"
        settings.ANYMAIL = {**settings.ANYMAIL, **anymail(ses)}
        for i in range(120):
            make_subscriber(f"r{i}@example.com")
        batches = publish_and_cut(alert, settings=settings)
        assert [b.planned_count for b in batches] == [120]  # one batch, three calls
        send_all(batches)
        assert ses.stats()["calls"] == 3 and len(ses.recipient_counts()) == 120
        # One template for the alert, created by the first call, deleted as it finished.
        assert {call["DefaultContent"]["Template"]["TemplateName"] for call in ses.calls} == {f"stoppress-alert-{alert.pk}"}
        assert ses.deleted_templates == [f"stoppress-alert-{alert.pk}"] and not ses.templates
        entry = ses.calls[0]["BulkEmailEntries"][0]
        names = {h["Name"] for h in entry["ReplacementHeaders"]}
        assert {"List-Unsubscribe", "List-Unsubscribe-Post"} <= names and "Message-ID" not in names
    alert.refresh_from_db()
    assert alert.status == "sent"


def test_amazon_ses_stores_the_template_again_if_it_was_deleted_meanwhile(alert, settings):
    """"Retry failed now" after the alert finished: another process deleted the template."""
    fake_class, module, anymail = PROVIDERS["Amazon SES"]
    with fake_class() as ses:
        settings.EMAIL_BACKEND = f"anymail.backends.{module}.EmailBackend"
        settings.ANYMAIL = {**settings.ANYMAIL, **anymail(ses)}
        for i in range(60):
            make_subscriber(f"r{i}@example.com")
        settings.FANOUT_BATCH_SIZE = 50
        first, second = publish_and_cut(alert, settings=settings)
        fanout.batch_send(batch_id=first.pk)
        ses.templates.clear()
        assert fanout.batch_send(batch_id=second.pk) == Batch.Status.SENT
        assert len(ses.recipient_counts()) == 60
