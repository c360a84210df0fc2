"""The API with the newsroom's editorial rules: a second pair of eyes (409 until an
editor approves), corrections and updates to exactly the original's recipients, time
to inbox on the read, and an audit record of every write naming the token."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from alerts.models import Alert, AuditEvent, Batch, TrackingEvent
from alerts.publishing import fanout, services
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts"
APPROVAL = "tag:stoppress,2026:problem/approval-required"


def soon(minutes: int = 30) -> str:
    return (timezone.now() + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def readers():
    an_hour_ago = timezone.now() - timedelta(hours=1)
    return [make_subscriber(f"{name}@example.com", confirmed_at=an_hour_ago) for name in ("ann", "bob", "cat")]


@pytest.fixture
def sent_original(alert, readers, mailgun, settings):
    """An alert sent in-process to three readers, through the fake Mailgun."""
    send_all(publish_and_cut(alert, batch_size=2, settings=settings))
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT, finished_at=timezone.now())
    alert.refresh_from_db()
    mailgun.reset()
    return alert


# --- A second pair of eyes ---------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"status": "published"}, {"status": "scheduled", "scheduled_for": soon()}])
def test_creating_past_the_approval_limit_is_a_409_and_creates_nothing(cms, readers, settings, fields):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    response = cms.post(ALERTS, {"headline": "Missiles fired", **fields}, key="create-1")
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == APPROVAL
    assert "more than 2 readers" in problem["detail"] and "approve" in problem["detail"]
    assert not Alert.objects.exists() and not AuditEvent.objects.exists()
    # The key was not used up: the same call, under the limit, acts.
    settings.APPROVAL_REQUIRED_ABOVE = 3
    assert cms.post(ALERTS, {"headline": "Missiles fired", **fields}, key="create-1").status_code == 201


def test_publish_and_schedule_wait_for_an_editors_approval(cms, alert, readers, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    for action, body in (("publish", None), ("schedule", {"scheduled_for": soon()})):
        response = cms.post(f"{ALERTS}/{alert.pk}/{action}", body)
        assert response.status_code == 409 and response.json()["type"] == APPROVAL
    alert.refresh_from_db()
    assert alert.status == Alert.Status.DRAFT and alert.published_at is None
    editor = User.objects.create_user("eve", "eve@news.example.com", "pw", is_staff=True)
    assert services.alert_approve(alert_id=alert.pk, user=editor)
    response = cms.post(f"{ALERTS}/{alert.pk}/publish")
    assert response.status_code == 200 and response.json()["status"] == "sending"


def test_there_is_no_approval_endpoint(cms, alert):
    # An approval is a second editor's, never an integration's (README: the API).
    assert cms.post(f"{ALERTS}/{alert.pk}/approve").status_code == 404


# --- Corrections and updates ---------------------------------------------------------------


def test_a_correction_goes_to_exactly_the_original_recipients_still_subscribed(
        cms, sent_original, readers, mailgun):
    readers[1].mark_unsubscribed()
    readers[1].save()
    make_subscriber("newcomer@example.com")  # joined since: not a recipient of the original
    response = cms.post(f"{ALERTS}/{sent_original.pk}/corrections",
                        {"headline": "Only one missile was fired", "standfirst": "We said two"}, key="fix-1")
    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "correction" and body["follow_up_of"] == sent_original.pk
    assert body["status"] == "sending" and body["url"] == sent_original.url
    assert response["Location"] == f"{ALERTS}/{body['id']}"
    follow_up = Alert.objects.get(pk=body["id"])
    fanout.alert_fan_out(alert_id=follow_up.pk)
    send_all(list(Batch.objects.filter(alert=follow_up)))
    assert sorted(r for call in mailgun.calls for r in call.recipients) == ["ann@example.com", "cat@example.com"]
    assert {call.first("subject") for call in mailgun.calls} == {"Correction: Only one missile was fired"}

    # A retry with the same key gets the same answer and sends nothing more.
    again = cms.post(f"{ALERTS}/{sent_original.pk}/corrections",
                     {"headline": "Only one missile was fired", "standfirst": "We said two"}, key="fix-1")
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Alert.objects.filter(follow_up_of=sent_original).count() == 1

    original = cms.get(f"{ALERTS}/{sent_original.pk}").json()
    assert original["kind"] == "normal" and original["follow_up_of"] is None
    assert original["follow_ups"] == [body["id"]]


def test_an_update_is_an_update(cms, sent_original):
    response = cms.post(f"{ALERTS}/{sent_original.pk}/updates", {"headline": "Summit goes ahead"})
    assert response.status_code == 201
    assert response.json()["kind"] == "update"
    assert cms.get(f"{ALERTS}/{sent_original.pk}").json()["follow_ups"] == [response.json()["id"]]


def test_an_alert_not_yet_sent_cannot_be_followed_up(cms, alert):
    response = cms.post(f"{ALERTS}/{alert.pk}/corrections", {"headline": "Fix"})
    assert response.status_code == 409
    assert response.json()["type"] == "tag:stoppress,2026:problem/follow-up-refused"
    assert response.json()["detail"] == "Only an alert that has been sent can be corrected or updated."
    assert not Alert.objects.filter(follow_up_of=alert).exists()


def test_a_follow_up_of_a_follow_up_is_refused(cms, sent_original):
    first = cms.post(f"{ALERTS}/{sent_original.pk}/updates", {"headline": "Summit goes ahead"}).json()
    Alert.objects.filter(pk=first["id"]).update(status=Alert.Status.SENT)
    response = cms.post(f"{ALERTS}/{first['id']}/corrections", {"headline": "Fix"})
    assert response.status_code == 409 and "not for another follow-up" in response.json()["detail"]


def test_a_follow_up_needs_a_publish_token_and_a_headline(drafter, cms, sent_original):
    assert drafter.post(f"{ALERTS}/{sent_original.pk}/corrections", {"headline": "Fix"}).status_code == 403
    response = cms.post(f"{ALERTS}/{sent_original.pk}/corrections", {"headline": "  "})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "headline"
    assert cms.post(f"{ALERTS}/999999/corrections", {"headline": "Fix"}).status_code == 404
    assert not Alert.objects.filter(follow_up_of=sent_original).exists()


def test_past_the_approval_limit_a_follow_up_is_a_draft_for_an_editor(cms, sent_original, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    response = cms.post(f"{ALERTS}/{sent_original.pk}/corrections", {"headline": "Only one missile"})
    assert response.status_code == 201 and response.json()["status"] == "draft"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.APPROVAL_REQUESTED,
                                     target_id=response.json()["id"]).exists()


# --- Time to inbox ---------------------------------------------------------------------


def test_reading_an_alert_gives_its_time_to_inbox_overall_and_per_mailbox(cms, alert):
    assert cms.get(f"{ALERTS}/{alert.pk}").json()["time_to_inbox"] is None  # nothing delivered yet
    published = timezone.now() - timedelta(minutes=5)
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT, published_at=published)
    TrackingEvent.objects.bulk_create([
        TrackingEvent(event_id=f"e{i}", event_type="delivered", alert_id=alert.pk, mailbox=mailbox,
                      occurred_at=published + timedelta(seconds=seconds))
        for i, (mailbox, seconds) in enumerate([("gmail", 10), ("gmail", 20), ("gmail", 30), ("microsoft", 40)])])
    from django.core.cache import cache
    cache.clear()  # the figures are cached for the progress page's polls, as here
    times = cms.get(f"{ALERTS}/{alert.pk}").json()["time_to_inbox"]
    assert times["overall"]["count"] == 4 and times["overall"]["p50"] == 25.0
    assert times["by_mailbox"]["gmail"] == {"count": 3, "p50": 20.0, "p95": 29.0, "p99": 29.8}
    assert times["by_mailbox"]["microsoft"]["p99"] == 40.0
    assert set(times["by_mailbox"]) == {"gmail", "microsoft"}


# --- The audit trail ---------------------------------------------------------------------


def test_every_api_write_is_in_the_audit_trail_under_the_tokens_name(cms, world, sent_original):
    created = cms.post(ALERTS, {"headline": "Storm closes bridge", "topics": ["world"]}).json()
    cms.post(f"{ALERTS}/{created['id']}/schedule", {"scheduled_for": soon()})
    cms.post(f"{ALERTS}/{created['id']}/publish")
    cms.post(f"{ALERTS}/{created['id']}/stop")
    published = cms.post(ALERTS, {"headline": "Missiles fired", "status": "published"}).json()
    scheduled = cms.post(ALERTS, {"headline": "Budget", "status": "scheduled", "scheduled_for": soon()}).json()
    follow_up = cms.post(f"{ALERTS}/{sent_original.pk}/corrections", {"headline": "Only one"}).json()
    cms.get(f"{ALERTS}/{created['id']}")  # a read is not audited
    cms.post(f"{ALERTS}/{created['id']}/publish")  # refused (409): nothing happened, nothing recorded

    events = list(AuditEvent.objects.order_by("pk"))
    assert [(e.action, e.target_id) for e in events] == [
        (AuditEvent.Action.ALERT_CREATED, created["id"]),
        (AuditEvent.Action.ALERT_SCHEDULED, created["id"]),
        (AuditEvent.Action.ALERT_PUBLISHED, created["id"]),
        (AuditEvent.Action.ALERT_CANCELLED, created["id"]),
        (AuditEvent.Action.ALERT_CREATED, published["id"]),
        (AuditEvent.Action.ALERT_PUBLISHED, published["id"]),
        (AuditEvent.Action.ALERT_CREATED, scheduled["id"]),
        (AuditEvent.Action.ALERT_SCHEDULED, scheduled["id"]),
        (AuditEvent.Action.FOLLOW_UP_SENT, follow_up["id"]),
    ]
    for event in events:
        assert event.via == AuditEvent.Via.API and event.actor is None
        assert event.actor_name == "API token: CMS"
        assert event.ip_address == "127.0.0.1" and event.target_type == "alerts.alert"
    assert events[0].changes["headline"] == "Storm closes bridge" and events[0].changes["topics"] == ["world"]
    assert events[3].changes == {"status": ["sending", "cancelled"]}
    assert events[-1].changes["kind"] == "correction" and events[-1].changes["follow_up_of"] == sent_original.pk


def test_the_audit_names_the_client_behind_a_trusted_proxy(client, publish_token, settings):
    settings.TRUSTED_PROXIES = 1  # one proxy in front
    response = client.post(ALERTS, {"headline": "Storm"}, content_type="application/json",
                           headers={"Authorization": f"Bearer {publish_token[1]}",
                                    "X-Forwarded-For": "203.0.113.7"})
    assert response.status_code == 201
    assert AuditEvent.objects.get().ip_address == "203.0.113.7"
