"""The JSON endpoint, as another site's page would use it, and its CORS preflight."""

from __future__ import annotations

import pytest

from alerts.models import ConsentEvent, Subscriber
from tests.helpers import API, PARTNER

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def test_a_valid_address_gets_the_thanks_as_json(post_json, mailoutbox):
    response = post_json({"email": "alice@example.com"})
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["message"] == "Thanks for signing up to the breaking news emails"
    assert "confirm" in body["detail"]
    assert [m.to for m in mailoutbox] == [["alice@example.com"]]


def test_an_invalid_address_gets_400_and_the_message(post_json, mailoutbox):
    response = post_json({"email": "alice@"})
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False
    assert body["errors"]["email"] == ["Please enter a valid email address"]
    assert not Subscriber.objects.exists()
    assert mailoutbox == []


def test_a_mistyped_domain_comes_back_with_a_suggestion(post_json):
    assert post_json({"email": "alice@hotmial.com"}).json()["suggestion"] == "alice@hotmail.com"


def test_a_form_post_is_refused_with_415(client):
    response = client.post(API, {"email": "alice@example.com"})
    assert response.status_code == 415
    assert response.json()["ok"] is False
    assert not Subscriber.objects.exists()


def test_a_body_that_is_not_json_gets_400(post_json):
    response = post_json(b"{email: alice@example.com")
    assert response.status_code == 400
    assert response.json() == {"ok": False, "message": "The request body is not valid JSON."}


def test_past_the_ip_limit_the_answer_is_429_json(post_json, settings):
    settings.SIGNUP_RATE_PER_IP = "2/h"
    codes = [post_json({"email": f"r{i}@example.com"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    limited = post_json({"email": "r9@example.com"})
    assert limited["Content-Type"] == "application/json"
    assert limited.json()["ok"] is False
    assert "Too many attempts" in limited.json()["message"]
    assert Subscriber.objects.count() == 2


def test_marketing_consent_needs_a_real_true(post_json):
    post_json({"email": "a@example.com", "marketing": "false"})
    post_json({"email": "b@example.com", "marketing": True})
    given = ConsentEvent.objects.filter(purpose="marketing").values_list("subscriber__email", flat=True)
    assert list(given) == ["b@example.com"]


def test_the_signup_is_recorded_as_coming_from_the_api(post_json):
    post_json({"email": "alice@example.com"}, HTTP_USER_AGENT="PartnerApp/1.0")
    event = ConsentEvent.objects.get()
    assert (event.purpose, event.action, event.source) == ("alerts", "requested", "api")
    assert event.user_agent == "PartnerApp/1.0"
    assert Subscriber.objects.get().source == "api"


def preflight(client, origin: str):
    return client.options(API, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                          HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type")


def test_a_preflight_from_an_allowed_origin_is_let_through(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [PARTNER]
    response = preflight(client, PARTNER)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == PARTNER
    assert "content-type" in response["Access-Control-Allow-Headers"]


def test_a_preflight_from_any_other_origin_is_not(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [PARTNER]
    response = preflight(client, "https://evil.example.org")
    assert "Access-Control-Allow-Origin" not in response
