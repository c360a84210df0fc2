"""The publishing API's endpoints, through Django's whole request stack: what each
takes, what it answers, and what it refuses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.utils import timezone

from alerts.models import Alert, Batch, Topic
from alerts.publishing.services import alert_publish

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts"


def soon(minutes: int = 30) -> str:
    return (timezone.now() + timedelta(minutes=minutes)).isoformat()


def test_it_lists_the_topics_in_their_order(cms):
    Topic.objects.create(name="Sport", slug="sport", position=2)
    Topic.objects.create(name="World", slug="world", position=1)
    response = cms.get("/api/v1/topics")
    assert response.status_code == 200
    assert [t["slug"] for t in response.json()] == list(Topic.objects.values_list("slug", flat=True))


def test_it_creates_a_draft_with_its_topics(cms, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = cms.post(ALERTS, {"headline": "  Storm closes bridge ", "standfirst": "Traffic diverted",
                                     "url": "https://news.example.com/storm", "topics": ["world"]})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "draft" and body["headline"] == "Storm closes bridge"
    assert body["topics"] == ["world"] and body["done"] is False
    assert response["Location"] == f"{ALERTS}/{body['id']}" == body["links"]["self"]
    alert = Alert.objects.get(pk=body["id"])
    assert alert.status == Alert.Status.DRAFT and list(alert.topics.all()) == [world]
    assert queued == []  # a draft queues nothing


def test_it_creates_and_publishes_in_one_call(cms, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = cms.post(ALERTS, {"headline": "Missiles fired", "topics": ["world"], "status": "published"})
    assert response.status_code == 201
    assert response.json()["status"] == "sending" and response.json()["published_at"]
    assert len(queued) == 1  # the fan-out, after the commit


def test_it_creates_a_scheduled_alert(cms):
    when = soon()
    response = cms.post(ALERTS, {"headline": "Budget at noon", "status": "scheduled", "scheduled_for": when})
    assert response.status_code == 201
    alert = Alert.objects.get(pk=response.json()["id"])
    assert alert.status == Alert.Status.SCHEDULED
    assert alert.scheduled_for.isoformat() == when


def test_reading_an_alert_shows_its_live_progress(cms, alert):
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now(),
                                              audience_size=1500)
    Batch.objects.create(alert=alert, first_subscriber_id=1, last_subscriber_id=1000, planned_count=1000,
                         sent_count=1000, status=Batch.Status.SENT)
    Batch.objects.create(alert=alert, first_subscriber_id=1001, last_subscriber_id=1500, planned_count=500)
    body = cms.get(f"{ALERTS}/{alert.pk}").json()
    assert body["status"] == "sending"
    assert body["progress"]["audience"] == 1500
    assert body["progress"]["sent"] == 1000 and body["progress"]["remaining"] == 500
    assert body["progress"]["batches_open"] == 1


def test_it_publishes_schedules_and_stops_a_draft(cms, alert, django_capture_on_commit_callbacks):
    scheduled = cms.post(f"{ALERTS}/{alert.pk}/schedule", {"scheduled_for": soon()})
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    with django_capture_on_commit_callbacks() as queued:
        published = cms.post(f"{ALERTS}/{alert.pk}/publish")
    assert published.status_code == 200 and published.json()["status"] == "sending"
    assert len(queued) == 1
    stopped = cms.post(f"{ALERTS}/{alert.pk}/stop")
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "cancelled" and stopped.json()["done"] is True


def test_publishing_a_published_alert_is_a_conflict_that_sends_nothing(cms, alert, django_capture_on_commit_callbacks):
    alert_publish(alert_id=alert.pk)
    with django_capture_on_commit_callbacks() as queued:
        response = cms.post(f"{ALERTS}/{alert.pk}/publish")
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "The alert is sending: it cannot be published."
    assert queued == []


def test_stopping_a_draft_and_scheduling_a_sent_alert_are_conflicts(cms, alert):
    assert cms.post(f"{ALERTS}/{alert.pk}/stop").status_code == 409
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    assert cms.post(f"{ALERTS}/{alert.pk}/schedule", {"scheduled_for": soon()}).status_code == 409


@pytest.mark.parametrize("payload, field", [
    ({}, "headline"),
    ({"headline": ""}, "headline"),
    ({"headline": 5}, "headline"),
    ({"headline": "x" * 201}, "headline"),
    ({"headline": "Storm\nclosed"}, "headline"),
    ({"headline": "Storm\x00"}, "headline"),
    ({"headline": "Storm", "url": "javascript:alert(1)"}, "url"),
    ({"headline": "Storm", "url": "not a url"}, "url"),
    ({"headline": "Storm", "topics": "world"}, "topics"),
    ({"headline": "Storm", "status": "sent"}, "status"),
    ({"headline": "   "}, "headline"),
    ({"headline": "Storm", "status": "scheduled"}, "scheduled_for"),
    ({"headline": "Storm", "status": "scheduled", "scheduled_for": "2020-01-01T00:00:00Z"}, "scheduled_for"),
    ({"headline": "Storm", "status": "scheduled", "scheduled_for": "2099-01-01T00:00:00Z"}, "scheduled_for"),
    ({"headline": "Storm", "status": "scheduled", "scheduled_for": "2030-01-01T00:00:00"}, "scheduled_for"),
    ({"headline": "Storm", "status": "scheduled", "scheduled_for": "0001-01-01T00:00:00+14:00"}, "scheduled_for"),
    ({"headline": "Storm", "scheduled_for": "2030-01-01T00:00:00Z"}, "scheduled_for"),
])
def test_bad_fields_are_a_422_problem_naming_the_field(cms, payload, field):
    response = cms.post(ALERTS, payload)
    assert response.status_code == 422, response.content
    problem = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert problem["status"] == 422 and problem["title"] == "Unprocessable Entity"
    assert problem["type"].endswith("problem/validation")
    assert field in [error["field"] for error in problem["errors"]], problem
    assert not Alert.objects.exists()


def test_an_unknown_topic_is_named_and_nothing_is_created(cms, world):
    response = cms.post(ALERTS, {"headline": "Storm", "topics": ["world", "wrold"], "status": "published"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "topics", "message": "unknown topic 'wrold'"}]
    assert not Alert.objects.exists()


@pytest.mark.parametrize("raw", ["{", "[1, 2]", '"headline"', "null", "\x00\xff", '{"headline": "\\ud800"}'])
def test_a_body_that_is_not_an_alert_is_a_4xx_problem(cms, raw):
    response = cms.post(ALERTS, raw=raw)
    assert response.status_code in (400, 422), response.content
    assert response["Content-Type"] == "application/problem+json"
    assert not Alert.objects.exists()


def test_a_huge_body_is_refused_unread_with_413(cms, settings):
    response = cms.post(ALERTS, {"headline": "Storm", "body": "x" * (settings.API_MAX_BODY_BYTES + 1)})
    assert response.status_code == 413
    assert response.json()["type"].endswith("problem/body-too-large")


def test_an_unknown_alert_unknown_path_and_wrong_method_are_problems(cms):
    for response, status in [(cms.get(f"{ALERTS}/424242"), 404), (cms.post(f"{ALERTS}/424242/publish"), 404),
                             (cms.get(f"{ALERTS}/nope"), 422), (cms.get("/api/v1/nothing-here"), 404),
                             (cms.client.delete("/api/v1/topics"), 405),
                             (cms.get(f"{ALERTS}/99999999999999999999"), 422)]:
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["status"] == status
    assert cms.client.delete("/api/v1/topics")["Allow"] == "GET"


def test_an_unexpected_error_is_a_500_problem_not_a_page(cms, alert, monkeypatch):
    def broken(alert):
        raise RuntimeError("boom")

    monkeypatch.setattr("alerts.api.views.alert_progress", broken)
    cms.client.raise_request_exception = False
    response = cms.get(f"{ALERTS}/{alert.pk}")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    assert "boom" not in response.content.decode()


def test_the_schema_and_its_docs_are_served_from_our_own_origin(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200
    assert {"/api/v1/alerts", "/api/v1/alerts/{alert_id}", "/api/v1/alerts/{alert_id}/publish",
            "/api/v1/alerts/{alert_id}/schedule", "/api/v1/alerts/{alert_id}/stop",
            "/api/v1/topics"} <= set(schema.json()["paths"])
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "https://" not in page
    assert "script-src 'self'" in docs["Content-Security-Policy"]
    assert finders.find("ninja/swagger-ui-bundle.js")  # collected with the rest of our static files


def test_an_alert_with_every_field_full_fits_the_body_limit_even_fully_escaped(cms):
    import json

    full = {"headline": "ж" * 200, "standfirst": "ж" * 400, "body": "ж" * 20000, "image_alt": "ж" * 200,
            "url": "https://news.example.com/" + "a" * 470, "image_url": "https://img.example.com/" + "b" * 470,
            "topics": [f"t{i}" for i in range(50)]}
    for i in range(50):
        Topic.objects.create(name=f"Topic {i}", slug=f"t{i}", position=i)
    raw = json.dumps(full)  # ensure_ascii: every letter sent as \u0436
    assert len(raw) > 100_000
    response = cms.post(ALERTS, raw=raw)
    assert response.status_code == 201, response.content[:300]
    assert Alert.objects.get().body == "ж" * 20000
