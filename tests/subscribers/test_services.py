"""What unsubscribing, undoing and changing preferences record: the consent evidence
with the wording shown, the credit to the last alert, when a fresh double opt-in is
needed; and who is sent a preferences link."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.common.tokens import link_tokens
from alerts.models import ConsentEvent, Delivery, Subscriber, Suppression, Wording
from tests.factories import make_delivery, make_subscriber
from tests.helpers import ONE_CLICK, form_data, prefs_path, request_link, unsubscribe_path

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


# --- Unsubscribe and undo -------------------------------------------------------------


@pytest.mark.django_db
def test_the_unsubscribe_is_credited_to_the_last_alert_sent(client):
    alice = make_subscriber()
    delivery = make_delivery(alice, status="delivered")
    reserved = make_delivery(alice, status="pending", headline="Digest")  # a digest not yet sent
    Delivery.objects.filter(pk=reserved.pk).update(sent_at=None)
    client.post(unsubscribe_path(alice), ONE_CLICK)
    delivery.refresh_from_db()
    reserved.refresh_from_db()
    assert (delivery.status, reserved.status) == ("unsubscribed", "pending")


@pytest.mark.django_db
def test_undo_soon_after_resubscribes_with_consent_given_again(client):
    alice = make_subscriber()
    token = link_tokens.make_token(alice.pk)
    client.post(f"/u/{token}/", ONE_CLICK)
    page = client.post(f"/u/{token}/undo/").content.decode()
    assert "subscribed again" in page
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.CONFIRMED
    last = alice.consent_events.order_by("-id").first()
    assert (last.purpose, last.action, last.source) == ("alerts", "given", "email_link")


@pytest.mark.django_db
def test_undo_long_after_asks_for_a_fresh_double_opt_in(
    client, mailoutbox, settings, django_capture_on_commit_callbacks
):
    alice = make_subscriber(status=Subscriber.Status.UNSUBSCRIBED, confirmed_at=timezone.now(),
                            unsubscribed_at=timezone.now() - timedelta(hours=settings.UNSUBSCRIBE_UNDO_HOURS + 1))
    token = link_tokens.make_token(alice.pk)
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(f"/u/{token}/undo/").content.decode()
    assert "Check your inbox" in page
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.PENDING
    assert [m.to for m in mailoutbox] == [["alice@example.com"]]
    assert "/confirm/" in mailoutbox[0].body


@pytest.mark.django_db
def test_undo_does_not_override_a_suppression(client):
    alice = make_subscriber(status=Subscriber.Status.UNSUBSCRIBED, unsubscribed_at=timezone.now())
    Suppression.objects.create(email_hmac=alice.email_hmac, reason="complained")
    page = client.post(f"/u/{link_tokens.make_token(alice.pk)}/undo/").content.decode()
    assert "can't send to this address" in page
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


# --- Preferences ----------------------------------------------------------------------


def test_changing_delivery_choices_is_recorded_with_the_wording_shown(client, topics):
    alice = make_subscriber()
    page = client.post(prefs_path(alice), form_data(
        frequency="weekly", time_zone="America/New_York", topics=[topics[0].pk],
    ), REMOTE_ADDR="198.51.100.4").content.decode()
    assert "Your preferences are saved" in page
    alice.refresh_from_db()
    assert (alice.frequency, alice.time_zone) == ("weekly", "America/New_York")
    assert list(alice.topics.all()) == [topics[0]]
    event = alice.consent_events.get()
    assert (event.purpose, event.action, event.source) == ("alerts", "given", "preferences")
    assert event.wording.kind == Wording.Kind.PREFERENCES
    assert "Send me breaking news emails" in event.wording.text
    assert event.note == "frequency: weekly; time zone: America/New_York; topics: politics"
    assert event.ip_address == "198.51.100.4"


def test_withdrawing_marketing_leaves_alerts_alone(client):
    alice = make_subscriber(marketing_consent=True)
    client.post(prefs_path(alice), form_data())
    alice.refresh_from_db()
    assert alice.marketing_consent is False
    assert alice.status == Subscriber.Status.CONFIRMED
    event = alice.consent_events.get()
    assert (event.purpose, event.action) == ("marketing", "withdrawn")


def test_turning_alerts_off_leaves_marketing_alone(client):
    alice = make_subscriber(marketing_consent=True)
    client.post(prefs_path(alice), form_data(alerts=None, marketing="on", frequency="daily"))
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED
    assert (alice.marketing_consent, alice.frequency) == (True, "daily")
    event = alice.consent_events.get()
    assert (event.purpose, event.action, event.source) == ("alerts", "withdrawn", "preferences")
    assert event.wording.kind == Wording.Kind.PREFERENCES
    assert event.note == "frequency: daily"


def test_asking_for_marketing_records_the_checkbox_label(client):
    alice = make_subscriber()
    client.post(prefs_path(alice), form_data(marketing="on"))
    event = ConsentEvent.objects.get(subscriber=alice)
    assert (event.purpose, event.action) == ("marketing", "requested")
    assert event.wording.text == (
        "I would like to be emailed about offers, events and updates from The Daily Courier")


def test_an_unchanged_form_records_nothing(client):
    alice = make_subscriber()
    page = client.post(prefs_path(alice), form_data()).content.decode()
    assert "Nothing has changed" in page
    assert not ConsentEvent.objects.exists()


def test_turning_alerts_back_on_soon_after_is_immediate(client):
    alice = make_subscriber(status=Subscriber.Status.UNSUBSCRIBED, unsubscribed_at=timezone.now())
    client.post(prefs_path(alice), form_data())
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.CONFIRMED
    assert alice.consent_events.get().action == "given"


def test_turning_alerts_back_on_long_after_needs_confirmation(
    client, mailoutbox, django_capture_on_commit_callbacks
):
    alice = make_subscriber(status=Subscriber.Status.UNSUBSCRIBED, confirmed_at=timezone.now(),
                            unsubscribed_at=timezone.now() - timedelta(days=60))
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(prefs_path(alice), form_data()).content.decode()
    assert "emailed you a link to confirm" in page
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.PENDING
    assert len(mailoutbox) == 1


# --- The preferences link -------------------------------------------------------------


@pytest.mark.parametrize("state", ["unknown", "pending", "unsubscribed", "suppressed"])
def test_every_address_gets_the_same_answer(client, state, mailoutbox):
    email = "known@example.com"
    if state == "pending":
        make_subscriber(email, status=Subscriber.Status.PENDING)
    elif state == "unsubscribed":
        make_subscriber(email, status=Subscriber.Status.UNSUBSCRIBED, confirmed_at=timezone.now())
    elif state == "suppressed":
        make_subscriber(email)
        Suppression.objects.create(email_hmac=email_hmac(email), reason="bounced")
    make_subscriber("reference@example.com")
    response = request_link(client, email)
    reference = request_link(client, "reference@example.com")
    assert response.status_code == reference.status_code == 200
    assert response.content.decode().replace(email, "X") == \
        reference.content.decode().replace("reference@example.com", "X")
    sent_to = [m.to[0] for m in mailoutbox]
    assert sent_to == (["known@example.com", "reference@example.com"] if state == "unsubscribed"
                       else ["reference@example.com"])


def test_repeated_requests_are_held_back_by_the_cooldown(client, mailoutbox):
    make_subscriber()
    for _ in range(4):
        request_link(client)
    assert len(mailoutbox) == 1
