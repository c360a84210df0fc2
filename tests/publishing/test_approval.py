"""A second pair of eyes: past APPROVAL_REQUIRED_ABOVE readers an alert waits for
another editor's approval (never its author's) before it is published or scheduled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from alerts.models import Alert, AuditEvent
from alerts.publishing import services
from alerts.publishing.corrections import send_follow_up
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db


def make_publisher(name: str) -> User:
    user = User.objects.create_user(name, f"{name}@news.example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=[
        "add_alert", "change_alert", "view_alert", "publish_alert"]))
    return user


@pytest.fixture
def ann():
    return make_publisher("ann")


@pytest.fixture
def bob():
    return make_publisher("bob")


@pytest.fixture
def readers():
    an_hour_ago = timezone.now() - timedelta(hours=1)
    return [make_subscriber(f"r{i}@example.com", confirmed_at=an_hour_ago) for i in range(3)]


@pytest.fixture
def draft(ann, readers):
    return Alert.objects.create(headline="Missiles fired", author=ann)


def test_it_is_off_by_default_one_editor_publishes(draft, ann, settings):
    assert settings.APPROVAL_REQUIRED_ABOVE == 0
    assert services.alert_publish(alert_id=draft.pk, user=ann)


def test_past_the_limit_an_alert_waits_for_a_second_editor_not_its_author(draft, ann, bob, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    with pytest.raises(services.ApprovalRequired, match="more than 2 readers"):
        services.alert_publish(alert_id=draft.pk, user=ann)
    with pytest.raises(services.ApprovalRequired):
        services.alert_schedule(alert_id=draft.pk, when=timezone.now() + timedelta(hours=1), user=ann)
    with pytest.raises(services.ApprovalRefused, match="author"):
        services.alert_approve(alert_id=draft.pk, user=ann)
    assert services.alert_approve(alert_id=draft.pk, user=bob)
    draft.refresh_from_db()
    assert draft.approved_by == bob and draft.approved_at is not None
    assert services.alert_publish(alert_id=draft.pk, user=ann)


def test_an_alert_within_the_limit_needs_no_approval(draft, ann, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 3
    assert services.alert_publish(alert_id=draft.pk, user=ann)


def test_an_edit_after_approval_needs_approving_again_and_unschedules(draft, ann, bob, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    services.alert_approve(alert_id=draft.pk, user=bob)
    assert services.alert_schedule(alert_id=draft.pk, when=timezone.now() + timedelta(hours=1), user=ann)
    alert = Alert.objects.get(pk=draft.pk)
    alert.headline = "Missiles fired at the coast"
    assert services.alert_save_edit(alert=alert, user=ann) == services.EditOutcome.RETURNED_TO_DRAFT
    alert.refresh_from_db()
    assert alert.status == Alert.Status.DRAFT and alert.approved_at is None and alert.approved_by is None
    with pytest.raises(services.ApprovalRequired):
        services.alert_publish(alert_id=alert.pk, user=ann)


def test_the_admin_shows_the_wait_lets_a_second_editor_approve_and_records_it(client, draft, ann, bob, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    client.force_login(ann)
    page = client.get(f"/admin/alerts/alert/{draft.pk}/change/").content.decode()
    assert "Waiting for approval" in page and ">Approve<" not in page  # not for its author
    assert "another editor (not its author) needs to approve it first" in client.get(
        f"/admin/alerts/alert/{draft.pk}/publish/").content.decode()
    response = client.post(f"/admin/alerts/alert/{draft.pk}/publish/", follow=True)
    assert "another editor needs to approve it first" in response.content.decode()
    assert client.post(f"/admin/alerts/alert/{draft.pk}/approve/", follow=True).status_code == 200
    assert Alert.objects.get(pk=draft.pk).approved_at is None

    client.force_login(bob)
    assert ">Approve<" in client.get(f"/admin/alerts/alert/{draft.pk}/change/").content.decode()
    client.post(f"/admin/alerts/alert/{draft.pk}/approve/")
    [approved] = AuditEvent.objects.filter(action="alert.approved")
    assert approved.actor == bob and approved.target_id == draft.pk
    page = client.get(f"/admin/alerts/alert/{draft.pk}/change/").content.decode()
    assert "Waiting for approval" not in page and "bob" in page  # approved by, on the alert
    client.force_login(ann)
    client.post(f"/admin/alerts/alert/{draft.pk}/publish/")
    assert Alert.objects.get(pk=draft.pk).status == Alert.Status.SENDING


def test_approving_needs_the_publish_permission(client, draft, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 2
    writer = User.objects.create_user("writer", "w@news.example.com", "pw", is_staff=True)
    writer.user_permissions.set(Permission.objects.filter(codename__in=["change_alert", "view_alert"]))
    client.force_login(writer)
    assert client.post(f"/admin/alerts/alert/{draft.pk}/approve/").status_code == 403


def test_a_correction_to_many_readers_waits_for_approval_too(alert, ann, bob, readers, mailgun, settings):
    send_all(publish_and_cut(alert, batch_size=10, settings=settings))
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    alert.refresh_from_db()
    settings.APPROVAL_REQUIRED_ABOVE = 2
    follow_up = send_follow_up(alert, kind="correction", headline="Only one", by=ann)
    assert follow_up.status == Alert.Status.DRAFT
    services.alert_approve(alert_id=follow_up.pk, user=bob)
    assert services.alert_publish(alert_id=follow_up.pk, user=ann)
