"""Replay protection on the signed provider webhooks (alerts/webhooks.py): one
captured Mailgun request must not let anyone post complaints for other addresses,
now or later."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest
from anymail.signals import tracking

from alerts.models import Suppression, TrackingEvent
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db

WEBHOOK = "/anymail/mailgun/tracking/"
SIGNING_KEY = "mailgun-signing-key"
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"hooks:s3cret").decode()}


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "hooks:s3cret",
                        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}


def signature(*, age: float = 0, token: str | None = None) -> dict:
    timestamp, token = str(int(time.time() - age)), token or secrets.token_hex(25)
    digest = hmac.new(SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def complaint(recipient: str) -> dict:
    return {"event": "complained", "recipient": recipient, "timestamp": time.time(), "id": secrets.token_hex(8),
            "message": {"headers": {"message-id": "20260101.abc@mg.news.example.com"}}}


def post(client, sig: dict, event: dict):
    body = json.dumps({"signature": sig, "event-data": event})
    return client.post(WEBHOOK, data=body, content_type="application/json", **AUTH)


def suppressed(email: str) -> bool:
    from alerts.common.addresses import email_hmac

    return Suppression.objects.of_address(email_hmac(email)).exists()


def test_a_captured_signature_cannot_be_reused_with_another_body(client):
    make_subscriber("alice@example.com"), make_subscriber("bob@example.com")
    captured = signature()
    assert post(client, captured, complaint("alice@example.com")).status_code == 200
    # The attacker keeps the signature block and writes their own event.
    assert post(client, captured, complaint("bob@example.com")).status_code == 400
    assert suppressed("alice@example.com") and not suppressed("bob@example.com")


def test_a_stale_signature_is_refused_even_with_a_token_never_seen(client):
    make_subscriber("bob@example.com")
    assert post(client, signature(age=16 * 60), complaint("bob@example.com")).status_code == 400
    assert post(client, signature(age=-16 * 60), complaint("bob@example.com")).status_code == 400
    assert not suppressed("bob@example.com")
    assert post(client, signature(age=60), complaint("bob@example.com")).status_code == 200


def test_the_legacy_form_webhook_is_guarded_too(client):
    make_subscriber("bob@example.com")
    sig = signature()
    form = {**sig, "event": "complained", "recipient": "bob@example.com", "Message-Id": "<x@y>"}
    assert client.post(WEBHOOK, form, **AUTH).status_code == 200
    assert client.post(WEBHOOK, {**form, "recipient": "carol@example.com"}, **AUTH).status_code == 400


def test_a_request_we_failed_to_handle_may_be_retried_with_its_token(client):
    make_subscriber("bob@example.com")
    sig, event = signature(), complaint("bob@example.com")

    def fail_once(sender, event, esp_name, **kwargs):
        tracking.disconnect(fail_once)
        raise RuntimeError("database went away")

    tracking.connect(fail_once)
    client.raise_request_exception = False
    try:
        assert post(client, sig, event).status_code == 500
    finally:
        tracking.disconnect(fail_once)
    assert post(client, sig, event).status_code == 200  # the provider's retry
    assert suppressed("bob@example.com")
    assert TrackingEvent.objects.count() == 1


def test_inbound_webhooks_are_not_exposed(client):
    assert client.post("/anymail/mailgun/inbound/", {}).status_code == 404
    assert client.post("/anymail/postmark/inbound/", {}).status_code == 404
