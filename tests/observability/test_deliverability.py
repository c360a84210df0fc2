"""The deliverability guard: the last 24 hours' complaint rate warns on every admin page
above 0.1%, logs a WARNING, and above 0.3% publishing asks the editor to confirm."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, Batch, TrackingEvent
from alerts.observability.deliverability import rolling_rates
from alerts.tasks import check_deliverability

pytestmark = pytest.mark.django_db


def sent(count: int, *, hours_ago: float = 1) -> Alert:
    """An alert published `hours_ago`, handed off to `count` readers."""
    at = timezone.now() - timedelta(hours=hours_ago)
    alert = Alert.objects.create(headline="Earlier alert", status=Alert.Status.SENT, published_at=at)
    Batch.objects.create(alert=alert, first_subscriber_id=1, last_subscriber_id=count, planned_count=count,
                         sent_count=count, status=Batch.Status.SENT, sent_at=at)
    return alert


def events(kind: str, count: int, *, hours_ago: float = 1) -> None:
    at = timezone.now() - timedelta(hours=hours_ago)
    TrackingEvent.objects.bulk_create([TrackingEvent(event_id=secrets.token_hex(8), event_type=kind,
                                                     occurred_at=at) for _ in range(count)])


@pytest.fixture
def publisher(client):
    user = User.objects.create_user("chief", "chief@news.example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        codename__in=["view_alert", "change_alert", "add_alert", "publish_alert", "view_subscriber"]))
    client.force_login(user)
    return user


def test_the_rates_count_the_last_24_hours_of_sends_and_events():
    sent(1000), sent(5000, hours_ago=30)
    events("complained", 2), events("complained", 9, hours_ago=30), events("bounced", 5)
    rates = rolling_rates(fresh=True)
    assert (rates.handed_off, rates.complaints, rates.bounces) == (1000, 2, 5)
    assert rates.complaint_percent == "0.20%" and rates.bounce_percent == "0.50%"
    assert rates.warn and not rates.confirm


def test_every_admin_page_warns_above_a_tenth_of_a_percent(client, publisher):
    sent(1000)
    events("complained", 1)  # exactly 0.1%: not above
    assert b"deliverability-warning" not in client.get(reverse("admin:index")).content
    events("complained", 1)
    rolling_rates(fresh=True)
    for url in (reverse("admin:index"), reverse("admin:alerts_alert_changelist"),
                reverse("admin:alerts_subscriber_changelist")):
        page = client.get(url).content.decode()
        assert 'id="deliverability-warning"' in page and "0.20%" in page, url
    assert b"deliverability-warning" not in client.get("/").content  # readers never see it


def test_the_operators_log_says_so(caplog):
    sent(1000), events("complained", 2)
    with caplog.at_level(logging.WARNING, logger="alerts.observability.deliverability"):
        check_deliverability()
    assert "Spam complaints are at 0.20%" in caplog.text
    caplog.clear()
    TrackingEvent.objects.all().delete()
    with caplog.at_level(logging.WARNING, logger="alerts.observability.deliverability"):
        check_deliverability()
    assert caplog.text == ""


def test_above_three_tenths_of_a_percent_publishing_asks_to_confirm_with_the_figure(client, publisher, alert):
    sent(1000), events("complained", 4)
    rolling_rates(fresh=True)
    url = reverse("admin:alerts_alert_publish", args=[alert.pk])
    page = client.get(url).content.decode()
    assert 'id="complaint-confirm"' in page and "0.40%" in page
    client.post(url)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.DRAFT
    client.post(url, {"confirm_complaints": "1"})
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SENDING


def test_below_it_publishing_needs_no_confirmation(client, publisher, alert):
    sent(1000), events("complained", 2)
    url = reverse("admin:alerts_alert_publish", args=[alert.pk])
    assert b"complaint-confirm" not in client.get(url).content
    client.post(url)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SENDING
