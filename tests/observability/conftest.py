"""Fixtures of the observability tests: signed Mailgun webhooks, a scraper with the
metrics token, and a staff member who reads an alert's progress page."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest
from django.contrib.auth.models import Permission, User
from prometheus_client.parser import text_string_to_metric_families

WEBHOOK = "/anymail/mailgun/tracking/"
SIGNING_KEY = "mailgun-signing-key"
BASIC_AUTH = "hooks:s3cret"
METRICS_TOKEN = "scrape-token-0123456789"


@pytest.fixture(autouse=True)
def observability_settings(settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": BASIC_AUTH,
                        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    settings.METRICS_TOKEN = METRICS_TOKEN


@pytest.fixture
def staff(client):
    user = User.objects.create_user("desk", "desk@news.example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_alert", "change_alert"]))
    client.force_login(user)
    return user


def mailgun_body(event_data: dict) -> str:
    """One event as Mailgun posts it: JSON, signed with the webhook signing key."""
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                       "event-data": event_data})


def post_mailgun_event(client, event_data: dict | None = None, *, body: str | None = None):
    """POST one signed event behind the basic auth of ANYMAIL WEBHOOK_SECRET."""
    auth = "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode()
    return client.post(WEBHOOK, data=body or mailgun_body(event_data), content_type="application/json",
                       HTTP_AUTHORIZATION=auth)


def delivered_event(recipient: str, message_id: str, at: float) -> dict:
    return {"event": "delivered", "recipient": recipient, "timestamp": at, "id": secrets.token_hex(8),
            "message": {"headers": {"message-id": message_id.strip("<>")}},
            "delivery-status": {"code": 250, "message": "OK"}}


def scrape(client, token: str | None = METRICS_TOKEN):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get("/metrics", **headers)


def samples(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, keyed by (name, labels)."""
    response = scrape(client)
    assert response.status_code == 200, response.content[:300]
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples}


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)
