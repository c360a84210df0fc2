"""Signup to confirmed subscriber through a real Celery worker on the real Redis
broker, with the confirmation sent by the real anymail Mailgun backend to the local
fake Mailgun."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from alerts.models import Subscriber
from tests.helpers import link_in, wait_until

pytestmark = [pytest.mark.worker]


def test_a_reader_signs_up_and_confirms_through_a_real_worker(client, celery_worker_process, fake_mailgun):
    response = client.post("/", {"email": "reader@example.com", "marketing": "on"})
    assert "Thanks for signing up" in response.content.decode()

    calls = wait_until(lambda: fake_mailgun.calls, message="no confirmation reached Mailgun")
    call = calls[0]
    assert call.recipients == ["reader@example.com"]
    assert call.first("subject") == "Confirm your subscription to The Daily Courier's breaking news emails"
    # A batch send: each reader's own link travels in Mailgun's recipient-variables.
    text = call.first("text").replace("%recipient.c%", call.recipient_variables["reader@example.com"]["c"])
    path = urlsplit(link_in(text, "/confirm/")).path

    client.post(path)
    subscriber = Subscriber.objects.get(email="reader@example.com")
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.marketing_consent is True
