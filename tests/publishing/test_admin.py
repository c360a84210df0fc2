"""The editor's side: write, preview, test, publish once, schedule, stop, follow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from alerts import sweeper
from alerts.dev import demo
from alerts.models import Alert, Batch
from alerts.publishing import fanout
from tests.factories import make_subscriber
from tests.helpers import assert_email_contains

pytestmark = pytest.mark.django_db


# The demo alert. Kept here rather than in conftest.py: it stands in, for these tests
# only, for the shared `alert` fixture (tests/conftest.py) that the fan-out tests use.
@pytest.fixture
def alert():
    demo.ensure_topics()
    return demo.ensure_demo_alert()


def test_the_demo_alert_is_ready_to_publish(alert):
    assert alert.status == Alert.Status.DRAFT
    assert "North Korea" in alert.headline
    assert alert.topics.filter(slug="world").exists()


def test_preview_shows_the_email_at_phone_and_desktop_width_with_text(client, editor, alert):
    page = client.get(f"/admin/alerts/alert/{alert.pk}/preview/").content.decode()
    assert "Phone (375 px)" in page and "Desktop (700 px)" in page
    assert "Plain text" in page and "Vostochny" in page
    html = client.get(f"/admin/alerts/alert/{alert.pk}/preview/html/").content.decode()
    assert alert.headline in html
    assert 'style="' in html  # CSS inlined


def test_send_a_test_to_me(client, editor, alert, mailoutbox):
    client.post(f"/admin/alerts/alert/{alert.pk}/send-test/")
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["writer@news.example.com"]
    assert message.subject == f"[TEST] {alert.headline}"
    assert_email_contains(message, "Vostochny")
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.DRAFT


def test_an_editor_without_the_publish_permission_cannot_publish(client, editor, alert):
    assert client.get(f"/admin/alerts/alert/{alert.pk}/publish/").status_code == 403
    assert client.post(f"/admin/alerts/alert/{alert.pk}/publish/").status_code == 403
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.DRAFT


def test_publish_asks_for_confirmation_with_the_audience_size(client, publisher, alert):
    for i in range(3):
        make_subscriber(f"r{i}@example.com")
    page = client.get(f"/admin/alerts/alert/{alert.pk}/publish/").content.decode()
    assert "3</strong> subscribers" in page
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.DRAFT


def test_a_double_click_publishes_once(client, publisher, alert, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        client.post(f"/admin/alerts/alert/{alert.pk}/publish/")
        client.post(f"/admin/alerts/alert/{alert.pk}/publish/")
    assert len(callbacks) == 1  # one fan-out queued
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SENDING
    assert alert.published_by == publisher


def test_a_sent_alert_can_no_longer_be_edited(client, publisher, alert):
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    response = client.post(f"/admin/alerts/alert/{alert.pk}/change/", {"headline": "Changed"})
    assert response.status_code == 403 or Alert.objects.get(pk=alert.pk).headline != "Changed"


def test_scheduling_publishes_at_the_embargo_time(client, publisher, alert, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    when = timezone.now() + timedelta(hours=1)
    client.post(f"/admin/alerts/alert/{alert.pk}/schedule/", {"when": when.strftime("%Y-%m-%d %H:%M:%S")})
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SCHEDULED
    sweeper.sweep(now=timezone.now())
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.SCHEDULED
    sweeper.sweep(now=when + timedelta(seconds=1))
    assert Alert.objects.get(pk=alert.pk).status in (Alert.Status.SENDING, Alert.Status.SENT)


def test_a_schedule_in_the_past_is_refused(client, publisher, alert):
    response = client.post(f"/admin/alerts/alert/{alert.pk}/schedule/", {"when": "2020-01-01 10:00"})
    assert "Choose a time in the future" in response.content.decode()


def test_progress_shows_live_totals_and_a_subscriber_lookup(client, publisher, alert, mailgun, settings):
    make_subscriber("reader@example.com")
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())
    fanout.alert_fan_out(alert_id=alert.pk)
    fanout.batch_send(batch_id=Batch.objects.get(alert=alert).pk)
    data = client.get(f"/admin/alerts/alert/{alert.pk}/progress.json").json()
    assert data["status"] == "sent" and data["sent"] == 1 and data["remaining"] == 0
    assert data["first_handoff_s"] is not None
    page = client.get(f"/admin/alerts/alert/{alert.pk}/progress/", {"q": " Reader@Example.com "}).content.decode()
    assert mailgun.calls[0].message_id.strip("<>") in page
    page = client.get(f"/admin/alerts/alert/{alert.pk}/progress/", {"q": "nobody@example.com"}).content.decode()
    assert mailgun.calls[0].message_id.strip("<>") not in page


def test_stop_sending_from_the_admin(client, publisher, alert):
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())
    client.post(f"/admin/alerts/alert/{alert.pk}/stop/")
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.CANCELLED


def test_publish_alert_command_publishes_and_reports(alert, mailgun, settings, capsys):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    make_subscriber("reader@example.com")
    call_command("publish_alert", str(alert.pk), "--no-wait")
    out = capsys.readouterr().out
    assert f"Published alert {alert.pk}" in out
    assert Alert.objects.get(pk=alert.pk).status in (Alert.Status.SENDING, Alert.Status.SENT)


def test_progress_warns_when_complaints_pass_one_in_a_thousand(client, publisher, alert):
    from alerts.models import Delivery

    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT, published_at=timezone.now())
    batch = Batch.objects.create(alert=alert, first_subscriber_id=1, last_subscriber_id=1000)
    rows = [Delivery(alert=alert, batch=batch, subscriber=make_subscriber(f"r{i}@example.com"),
                     status=Delivery.Status.COMPLAINED if i < 2 else Delivery.Status.DELIVERED,
                     sent_at=timezone.now()) for i in range(1000)]
    Delivery.objects.bulk_create(rows)
    page = client.get(f"/admin/alerts/alert/{alert.pk}/progress/").content.decode()
    assert "Spam complaints are above 0.1%" in page
    assert "20 per 10,000 delivered" in page


def failed_send(alert, settings, mailgun):
    """The alert went out while the provider was down: its batch waits."""
    from alerts.sending.batches import RetryLater

    make_subscriber("reader@example.com")
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())
    fanout.alert_fan_out(alert_id=alert.pk)
    batch = Batch.objects.get(alert=alert)
    mailgun.fail_next(1, status=503)
    with pytest.raises(RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    return batch


def test_progress_says_since_when_the_provider_has_been_failing(client, publisher, alert, mailgun, settings):
    failed_send(alert, settings, mailgun)
    page = client.get(reverse("admin:alerts_alert_progress", args=[alert.pk])).content.decode()
    assert "Waiting for the provider" in page and "since " in page and "next try at" in page
    data = client.get(reverse("admin:alerts_alert_progress_json", args=[alert.pk])).json()
    assert data["waiting"].startswith("since ") and data["batches_failed"] == 0


def test_retry_failed_now_sends_a_given_up_batch_again(client, publisher, alert, mailgun, settings,
                                                       django_capture_on_commit_callbacks):
    batch = failed_send(alert, settings, mailgun)
    Batch.objects.filter(pk=batch.pk).update(give_up_at=timezone.now() - timedelta(seconds=1),
                                             next_attempt_at=timezone.now())
    mailgun.fail_next(1, status=503)
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.FAILED
    page = client.get(reverse("admin:alerts_alert_progress", args=[alert.pk])).content.decode()
    assert "Retry failed now" in page
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:alerts_alert_retry_failed", args=[alert.pk]))
    assert response.status_code == 302
    assert Alert.objects.get(pk=alert.pk).status == Alert.Status.SENT
    assert mailgun.total_recipients == 1


def test_retrying_failed_batches_needs_the_publish_permission(client, editor, alert):
    response = client.post(reverse("admin:alerts_alert_retry_failed", args=[alert.pk]))
    assert response.status_code == 403


# --- A scheduled alert is a publisher's decision --------------------------------------


def scheduled(alert) -> Alert:
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SCHEDULED,
                                             scheduled_for=timezone.now() + timedelta(hours=1))
    return Alert.objects.get(pk=alert.pk)


def edit(client, alert, headline: str):
    return client.post(f"/admin/alerts/alert/{alert.pk}/change/", {
        "headline": headline, "standfirst": alert.standfirst, "body": alert.body, "url": alert.url,
        "image_url": "", "image_alt": "", "topics": list(alert.topics.values_list("pk", flat=True)),
    })


def test_a_writer_cannot_change_a_scheduled_alert_that_the_sweeper_would_then_publish(client, editor, alert):
    alert = scheduled(alert)
    page = client.get(f"/admin/alerts/alert/{alert.pk}/change/").content.decode()
    assert 'name="_save"' not in page  # shown read-only
    assert edit(client, alert, "The writer's own text").status_code == 403
    Alert.objects.filter(pk=alert.pk).update(scheduled_for=timezone.now() - timedelta(seconds=1))
    sweeper.sweep()
    assert Alert.objects.get(pk=alert.pk).headline == alert.headline


def test_a_publisher_may_change_a_scheduled_alert_and_it_stays_scheduled(client, publisher, alert):
    alert = scheduled(alert)
    assert edit(client, alert, "Corrected headline").status_code == 302
    saved = Alert.objects.get(pk=alert.pk)
    assert (saved.headline, saved.status) == ("Corrected headline", Alert.Status.SCHEDULED)


def test_a_writers_form_loaded_before_the_alert_was_scheduled_returns_it_to_draft(editor, alert):
    from alerts.publishing.services import EditOutcome, alert_save_edit

    form_copy = Alert.objects.get(pk=alert.pk)  # the writer opens the draft ...
    scheduled(alert)  # ... a publisher schedules it ...
    form_copy.headline = "The writer's own text"  # ... and the writer saves
    assert alert_save_edit(alert=form_copy, user=editor) == EditOutcome.RETURNED_TO_DRAFT
    saved = Alert.objects.get(pk=alert.pk)
    assert (saved.status, saved.scheduled_for, saved.headline) == (Alert.Status.DRAFT, None,
                                                                   "The writer's own text")


def test_an_alert_sent_while_its_form_was_open_is_not_changed(editor, alert):
    from alerts.publishing.services import EditOutcome, alert_save_edit

    form_copy = Alert.objects.get(pk=alert.pk)
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    form_copy.headline = "Too late"
    assert alert_save_edit(alert=form_copy, user=editor) == EditOutcome.REFUSED
    assert Alert.objects.get(pk=alert.pk).headline != "Too late"
