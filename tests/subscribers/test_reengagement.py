"""Re-engagement: readers sent alerts for months who opened none are asked "still want
these?" through the outbox (the fake Mailgun); "Yes, keep sending" or any open keeps
them; no answer within the grace period unsubscribes them with a consent record; and
nothing happens with the setting at 0 or open tracking off."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from alerts import tasks
from alerts.common.addresses import email_hmac
from alerts.common.tokens import link_tokens, reengage_tokens
from alerts.models import Alert, Batch, ConsentEvent, Delivery, OutboxEmail, Subscriber, TrackingEvent
from alerts.outbox.services import outbox_drain
from alerts.rights.export import subscriber_data
from alerts.subscribers import reengagement
from alerts.subscribers.reengagement import reengage_run
from tests.helpers import link_in

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def reengage_on(settings, mailgun):
    settings.REENGAGE_AFTER_MONTHS = 3
    settings.REENGAGE_GRACE_DAYS = 14
    settings.TRACKING_WEBHOOKS_ENABLED = True
    settings.TRACKING_WEBHOOK_ESPS = ["mailgun"]


@pytest.fixture
def sent_alert():
    """An alert sent a month ago, and its batch."""
    alert = Alert.objects.create(headline="Old news", status=Alert.Status.SENT,
                                 published_at=timezone.now() - 30 * DAY)
    batch = Batch.objects.create(alert=alert, first_subscriber_id=1, last_subscriber_id=10**9,
                                 status=Batch.Status.SENT)
    return alert, batch


def reader(email: str, *, confirmed_days_ago: int = 200, sent=None, **fields) -> Subscriber:
    subscriber = Subscriber.objects.create(
        email=email, email_hmac=email_hmac(email), status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now() - confirmed_days_ago * DAY, **fields)
    if sent is not None:
        alert, batch = sent
        Delivery.objects.create(alert=alert, subscriber=subscriber, batch=batch, status=Delivery.Status.DELIVERED,
                                sent_at=alert.published_at)
    return subscriber


def event(subscriber: Subscriber, kind: str = "opened", *, at=None) -> None:
    TrackingEvent.objects.create(event_id=f"mailgun:{secrets.token_hex(8)}", event_type=kind,
                                 recipient_hmac=subscriber.email_hmac, occurred_at=at or timezone.now())


@pytest.fixture
def world_of_readers(sent_alert):
    """One quiet reader among readers who must not be asked."""
    quiet = reader("quiet@example.com", sent=sent_alert)
    opener = reader("opener@example.com", sent=sent_alert)
    event(opener, at=timezone.now() - 10 * DAY)
    clicker = reader("clicker@example.com", sent=sent_alert)
    event(clicker, "clicked", at=timezone.now() - 60 * DAY)
    newcomer = reader("new@example.com", confirmed_days_ago=40, sent=sent_alert)
    unsent = reader("unsent@example.com")  # subscribed long ago, sent nothing in the window
    asked = reader("asked@example.com", sent=sent_alert, reengage_asked_at=timezone.now() - 5 * DAY)
    return {"quiet": quiet, "opener": opener, "clicker": clicker, "new": newcomer, "unsent": unsent,
            "asked": asked}


def asked_emails() -> list[str]:
    return sorted(OutboxEmail.objects.filter(kind=OutboxEmail.Kind.REENGAGE).values_list("address", flat=True))


def keep_link(mailgun, address: str) -> str:
    [call] = [call for call in mailgun.calls if address in call.recipients]
    return urlsplit(link_in(call.first("text"), "/still-subscribed/")).path


def test_only_a_reader_sent_alerts_for_months_without_an_open_is_asked_once(world_of_readers, mailgun):
    result = reengage_run()
    assert result.asked == 1 and asked_emails() == ["quiet@example.com"]
    quiet = Subscriber.objects.get(email="quiet@example.com")
    assert quiet.reengage_asked_at is not None
    assert reengage_run().asked == 0  # idempotent: already asked
    assert outbox_drain() == 1
    [call] = mailgun.calls
    assert call.recipients == ["quiet@example.com"]
    assert "still want" in call.first("subject").lower()
    text = call.first("text")
    assert "14 days" in text and "/still-subscribed/" in text and "/u/" in text
    assert OutboxEmail.objects.get().status == OutboxEmail.Status.SENT


def test_yes_keep_sending_keeps_the_reader_through_a_csrf_protected_post(world_of_readers, mailgun):
    reengage_run()
    outbox_drain()
    path = keep_link(mailgun, "quiet@example.com")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(path)
    assert page.status_code == 200 and b"Yes, keep sending" in page.content
    assert Subscriber.objects.get(email="quiet@example.com").reengage_asked_at is not None  # GET changes nothing
    assert browser.post(path).status_code == 403  # no CSRF token
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    answer = browser.post(path, {"csrfmiddlewaretoken": token})
    assert answer.status_code == 200 and b"nothing changes" in answer.content
    quiet = Subscriber.objects.get(email="quiet@example.com")
    assert quiet.reengage_asked_at is None and quiet.reengage_kept_at is not None
    assert quiet.consent_events.filter(action=ConsentEvent.Action.GIVEN, note__icontains="keep sending").count() == 1
    assert subscriber_data(quiet.pk)["subscription"]["still_want_these_answered_at"] is not None
    assert browser.post(path, {"csrfmiddlewaretoken": token}).status_code == 200  # repeating is harmless
    assert quiet.consent_events.filter(action=ConsentEvent.Action.GIVEN).count() == 1
    later = reengage_run(now=timezone.now() + 20 * DAY)
    assert later.unsubscribed == 0 and later.asked == 0
    assert Subscriber.objects.get(pk=quiet.pk).status == Subscriber.Status.CONFIRMED


def test_an_open_meanwhile_counts_as_an_answer(world_of_readers):
    reengage_run()
    outbox_drain()
    quiet = world_of_readers["quiet"]
    event(quiet, at=timezone.now() + DAY)
    result = reengage_run(now=timezone.now() + 20 * DAY)
    assert result.kept == 1 and result.unsubscribed == 0
    quiet.refresh_from_db()
    assert quiet.status == Subscriber.Status.CONFIRMED and quiet.reengage_asked_at is None


def test_no_answer_after_the_grace_period_unsubscribes_with_the_reason_on_record(world_of_readers, mailgun):
    reengage_run()
    outbox_drain()
    quiet = world_of_readers["quiet"]
    assert reengage_run(now=timezone.now() + 13 * DAY).unsubscribed == 0  # still within the grace period
    result = reengage_run(now=timezone.now() + 15 * DAY)
    assert result.unsubscribed == 1
    quiet.refresh_from_db()
    assert quiet.status == Subscriber.Status.UNSUBSCRIBED
    withdrawal = quiet.consent_events.get(action=ConsentEvent.Action.WITHDRAWN)
    assert withdrawal.source == ConsentEvent.Source.REENGAGEMENT
    assert "no answer within 14 days" in withdrawal.note and "3 months" in withdrawal.note
    # The reader's own data download says why, too.
    [exported] = [entry for entry in subscriber_data(quiet.pk)["consent_history"] if entry["action"] == "withdrawn"]
    assert exported["how"] == "No answer to a re-engagement email"
    # Not counted as an unsubscribe from the last alert they were sent: they did not act on it.
    assert Delivery.objects.get(subscriber=quiet).status == Delivery.Status.DELIVERED
    # Nobody else was touched, and nothing more is sent to the reader.
    assert Subscriber.objects.filter(status=Subscriber.Status.UNSUBSCRIBED).count() == 1
    assert reengage_run(now=timezone.now() + 16 * DAY).asked == 0
    outbox_drain()
    assert mailgun.recipient_counts()["quiet@example.com"] == 1
    # The keep link now says so, and changes nothing.
    answer = Client().post(keep_link(mailgun, "quiet@example.com"))
    assert answer.status_code == 200 and b"no longer subscribed" in answer.content
    assert Subscriber.objects.get(pk=quiet.pk).status == Subscriber.Status.UNSUBSCRIBED


def test_a_reader_whose_email_was_never_handed_off_is_not_unsubscribed(world_of_readers, mailgun):
    reengage_run()
    mailgun.fail_next(1, status=503)
    outbox_drain()
    assert OutboxEmail.objects.get().status == OutboxEmail.Status.PENDING
    assert reengage_run(now=timezone.now() + 30 * DAY).unsubscribed == 0
    assert Subscriber.objects.get(email="quiet@example.com").status == Subscriber.Status.CONFIRMED


def test_setting_zero_does_nothing(world_of_readers, settings):
    settings.REENGAGE_AFTER_MONTHS = 0
    result = reengage_run(now=timezone.now() + 30 * DAY)
    assert result.skipped_because and result.asked == 0
    assert not OutboxEmail.objects.exists()


@pytest.mark.parametrize("off", ["webhooks", "backend", "no_opens"])
def test_nothing_happens_where_opens_are_not_tracked_and_the_log_says_why(world_of_readers, settings, caplog, off):
    if off == "webhooks":
        settings.TRACKING_WEBHOOKS_ENABLED = False
    elif off == "backend":
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    else:
        TrackingEvent.objects.filter(event_type="opened").delete()
    with caplog.at_level(logging.WARNING, logger="alerts.subscribers.reengagement"):
        result = reengage_run()
    assert result.asked == 0 and not OutboxEmail.objects.exists()
    [line] = [record.getMessage() for record in caplog.records]
    assert "did nothing" in line and result.skipped_because in line
    # A reader already asked is left alone too, however long ago.
    assert reengage_run(now=timezone.now() + 60 * DAY).unsubscribed == 0
    assert not Subscriber.objects.filter(status=Subscriber.Status.UNSUBSCRIBED).exists()


def test_a_bad_forged_or_foreign_token_gets_a_clear_400(world_of_readers):
    quiet = world_of_readers["quiet"]
    for token in ["nonsense", "A" * 40, link_tokens.make_token(quiet.pk)]:
        for method in ("get", "post"):
            response = getattr(Client(), method)(f"/still-subscribed/{token}/")
            assert response.status_code == 400 and b"This link does not work" in response.content
    expired = reengage_tokens.make_token(quiet.pk)
    quiet.links_not_before = timezone.now() + timedelta(seconds=1)
    quiet.save(update_fields=["links_not_before"])
    assert Client().post(f"/still-subscribed/{expired}/").status_code == 400
    assert Subscriber.objects.get(pk=quiet.pk).reengage_kept_at is None


def test_the_daily_task_walks_in_chunks_and_queues_the_rest(world_of_readers, eager_celery, monkeypatch):
    monkeypatch.setattr(reengagement, "CHUNK", 2)
    monkeypatch.setattr(reengagement, "TIME_BUDGET_SECONDS", -1.0)
    tasks.reengage_readers.delay()
    assert asked_emails() == ["quiet@example.com"]


def test_a_keep_pressed_while_the_pass_runs_wins_over_the_unsubscribe(world_of_readers):
    reengage_run()
    stale = Subscriber.objects.get(email="quiet@example.com")  # as the pass read it
    assert reengagement.reengage_keep(subscriber=stale, meta=reengagement.RequestMeta())
    assert reengagement._unsubscribe(stale, handed_off=timezone.now() - 30 * DAY) == 0
    assert Subscriber.objects.get(pk=stale.pk).status == Subscriber.Status.CONFIRMED
