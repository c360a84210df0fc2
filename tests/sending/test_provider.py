"""Handing a batch to the provider: one merged Mailgun call or one SMTP connection, and
transient errors retried while permanent ones are not."""

from __future__ import annotations

import json

import pytest
import requests
from django.utils import timezone

from alerts.models import Batch, Delivery
from alerts.publishing import fanout
from alerts.sending import batches as batch_engine
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db


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
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())  # the wait is over
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert mailgun.total_recipients == 1


def test_a_request_the_provider_refuses_outright_is_not_retried(alert, settings, mailgun):
    make_subscriber()
    batch = publish_and_cut(alert, settings=settings)[0]
    mailgun.fail_next(1, status=400)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    assert Delivery.objects.get().status == Delivery.Status.FAILED


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


@pytest.mark.parametrize(("no_proxy", "expected"), [("", "http://proxy.example.com:3128"), ("127.0.0.1", None)])
def test_a_kept_connection_reads_the_proxy_settings_once_as_it_opens(settings, monkeypatch, no_proxy, expected):
    from alerts.sending import provider

    settings.ANYMAIL = {**settings.ANYMAIL, "POSTMARK_SERVER_TOKEN": "key", "POSTMARK_API_URL": "http://127.0.0.1:9/"}
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/newsroom.pem")
    connection = provider._open_connection("anymail.backends.postmark.EmailBackend", {})
    monkeypatch.delenv("HTTP_PROXY")  # read already: later changes need a new connection
    session = connection.session
    assert session.trust_env is False
    assert session.proxies.get("http") == expected
    assert session.verify == "/etc/ssl/certs/newsroom.pem"
    request = session.prepare_request(requests.Request("POST", connection.api_url + "email/bulk"))
    assert session.merge_environment_settings(request.url, {}, None, None, None)["proxies"].get("http") == expected
