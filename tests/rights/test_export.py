"""Data rights: downloading what we hold about oneself."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from alerts.common.tokens import data_tokens, link_tokens
from alerts.models import Subscriber
from tests.helpers import EMAIL

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def data_url(subscriber: Subscriber) -> str:
    return reverse("alerts:data_export", args=[data_tokens["export"].make_token(subscriber.pk)])


def test_the_data_page_shows_a_download_button_and_no_data(client, erin):
    page = client.get(data_url(erin)).content.decode()
    assert "Download</button>" in page
    assert EMAIL not in page


def test_downloading_returns_everything_as_a_json_attachment(client, erin):
    response = client.post(data_url(erin))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith("attachment;")
    assert "no-store" in response["Cache-Control"]
    data = json.loads(response.content)
    assert data["subscription"]["email"] == EMAIL
    assert data["subscription"]["marketing_consent"] is True
    assert data["subscription"]["time_zone"] == "Europe/Berlin"
    consent = data["consent_history"][0]
    assert (consent["purpose"], consent["action"], consent["ip_address"]) == ("alerts", "confirmed", "203.0.113.7")
    assert "breaking news" in consent["wording_shown"]
    assert data["deliveries"][0]["email"] == "Breaking: the budget"
    assert data["suppressions"][0]["reason"] == "Added by staff"


def test_a_forged_data_link_shows_and_sends_nothing(client, erin):
    token = link_tokens.make_token(erin.pk)
    for method in (client.get, client.post):
        response = method(f"/data/{token}0/")
        assert response.status_code == 400
        assert EMAIL not in response.content.decode()
