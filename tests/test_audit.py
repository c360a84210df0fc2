"""The audit trail: every editorial action recorded with who, when, from where and
what changed; readable in the admin, and nobody can add, change or delete an event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from alerts.common.audit import record_audit
from alerts.models import Alert, AuditEvent, Suppression, Topic
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db

ADDRESS = "198.51.100.7"


@pytest.fixture
def chief(client):
    user = User.objects.create_superuser("chief", "chief@news.example.com", "pw")
    client.force_login(user)
    return user


def events(action: str):
    return list(AuditEvent.objects.filter(action=action).order_by("at", "id"))


def test_writing_editing_scheduling_publishing_and_stopping_are_each_recorded(client, chief, world):
    client.post("/admin/alerts/alert/add/", {"headline": "Missiles fired", "standfirst": "Two",
                                             "topics": [world.pk]}, REMOTE_ADDR=ADDRESS)
    alert = Alert.objects.get()
    [created] = events("alert.created")
    assert created.actor == chief and created.actor_name == "chief" and created.ip_address == ADDRESS
    assert created.target_id == alert.pk and created.target_type == "alerts.alert"
    assert created.changes["headline"] == [None, "Missiles fired"] and created.changes["topics"] == [None, ["World"]]

    client.post(f"/admin/alerts/alert/{alert.pk}/change/", {"headline": "One missile fired", "standfirst": "Two",
                                                            "topics": []}, REMOTE_ADDR=ADDRESS)
    [edited] = events("alert.edited")
    assert edited.changes == {"headline": ["Missiles fired", "One missile fired"], "topics": [["World"], []]}

    when = timezone.now() + timedelta(hours=2)
    client.post(f"/admin/alerts/alert/{alert.pk}/schedule/", {"when": when.strftime("%Y-%m-%d %H:%M")})
    [scheduled] = events("alert.scheduled")
    assert scheduled.changes["scheduled_for"][0] is None and scheduled.changes["scheduled_for"][1]
    client.post(f"/admin/alerts/alert/{alert.pk}/publish/")
    client.post(f"/admin/alerts/alert/{alert.pk}/stop/")
    assert [e.action for e in AuditEvent.objects.order_by("at", "id")] == [
        "alert.created", "alert.edited", "alert.scheduled", "alert.published", "alert.cancelled"]


def test_a_test_send_and_a_correction_are_recorded(client, chief, alert, mailgun, settings, mailoutbox):
    client.post(f"/admin/alerts/alert/{alert.pk}/send-test/")
    assert events("alert.test_sent")[0].note == "to chief@news.example.com"
    make_subscriber("ann@example.com", confirmed_at=timezone.now() - timedelta(hours=1))
    send_all(publish_and_cut(alert, batch_size=10, settings=settings))
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    client.post(f"/admin/alerts/alert/{alert.pk}/follow-up/correction/", {"headline": "Only one"})
    [sent] = events("alert.follow_up_sent")
    follow_up = Alert.objects.get(follow_up_of=alert)
    assert sent.target_id == follow_up.pk and sent.changes["kind"] == "correction"
    assert sent.changes["follow_up_of"] == alert.pk and sent.changes["headline"] == [None, "Only one"]


def test_topic_changes_and_a_lifted_suppression_are_recorded(client, chief):
    client.post("/admin/alerts/topic/add/", {"name": "Sport", "slug": "sport", "position": 1})
    topic = Topic.objects.get(slug="sport")
    client.post(f"/admin/alerts/topic/{topic.pk}/delete/", {"post": "yes"})
    assert [e.action for e in AuditEvent.objects.order_by("id")] == ["topic.changed", "topic.deleted"]
    suppression = Suppression.objects.create(email_hmac="x" * 64, reason="bounced")
    client.post(f"/admin/alerts/suppression/{suppression.pk}/change/", {"lift_reason": "Reader asked by phone"})
    [lifted] = events("suppression.lifted")
    assert lifted.note == "Reader asked by phone" and lifted.target_id == suppression.pk


def test_the_trail_is_readable_and_nobody_can_add_change_or_delete_it(client, chief):
    event = record_audit(action=AuditEvent.Action.ALERT_PUBLISHED, actor=chief, note="by hand",
                         changes={"when": timezone.now(), "headline": ["a", "b"]})
    listing = client.get("/admin/alerts/auditevent/")
    assert listing.status_code == 200 and "Alert published" in listing.content.decode()
    page = client.get(f"/admin/alerts/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and "<strong>headline</strong>: a &rarr; b" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()  # read-only: no save button
    assert client.get("/admin/alerts/auditevent/add/").status_code == 403
    assert client.post(f"/admin/alerts/auditevent/{event.pk}/change/", {"note": "rewritten"}).status_code == 403
    assert client.post(f"/admin/alerts/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/alerts/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk],
                                              "post": "yes"})
    event.refresh_from_db()
    assert event.note == "by hand" and AuditEvent.objects.count() == 1


def test_staff_need_the_view_permission_to_read_it(client):
    user = User.objects.create_user("writer", "w@news.example.com", "pw", is_staff=True)
    client.force_login(user)
    assert client.get("/admin/alerts/auditevent/").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    assert client.get("/admin/alerts/auditevent/").status_code == 200


def test_record_audit_takes_the_client_address_behind_the_trusted_proxy(rf, settings):
    settings.TRUSTED_PROXIES = 1
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    request.user = User.objects.create_user("api-client")
    event = record_audit(action=AuditEvent.Action.OTHER, request=request, via=AuditEvent.Via.API)
    assert event.ip_address == "203.0.113.9" and event.actor_name == "api-client" and event.via == "api"
