"""The preference centre (signed link, no password) and asking for a fresh link."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.common.tokens import link_tokens
from alerts.models import ConsentEvent, Subscriber, Suppression, Topic, Wording
from tests.factories import make_subscriber
from tests.helpers import assert_email_contains, link_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

REQUEST = "/preferences/"


@pytest.fixture
def topics():
    return [Topic.objects.create(name="Politics", slug="politics"),
            Topic.objects.create(name="Sport", slug="sport")]


def prefs_path(subscriber: Subscriber) -> str:
    return reverse("alerts:preferences", args=[link_tokens.make_token(subscriber.pk)])


def form_data(**overrides) -> dict:
    data = {"alerts": "on", "frequency": "immediate", "time_zone": "", "topics": []}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_the_page_shows_the_current_choices(client, topics):
    alice = make_subscriber(frequency="daily", marketing_consent=True, time_zone="Europe/Paris")
    alice.topics.set([topics[1]])
    page = client.get(prefs_path(alice)).content.decode()
    assert "Your email preferences" in page
    assert "Send me breaking news emails from The Daily Courier" in page
    assert re.search(r'value="daily"[^>]* checked', page)
    assert '<option value="Europe/Paris" selected>' in page
    assert re.search(rf'value="{topics[1].pk}"[^>]* checked', page)
    assert not re.search(rf'value="{topics[0].pk}"[^>]* checked', page)


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


def test_giving_marketing_consent_records_the_checkbox_label(client):
    alice = make_subscriber()
    client.post(prefs_path(alice), form_data(marketing="on"))
    event = ConsentEvent.objects.get(subscriber=alice)
    assert (event.purpose, event.action) == ("marketing", "given")
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


@pytest.mark.parametrize("bad", [
    {"frequency": "hourly"}, {"topics": [999999]}, {"time_zone": "Mars/Olympus"}, {"topics": ["x"]},
])
def test_bad_input_is_refused_without_changing_anything(client, bad):
    alice = make_subscriber(marketing_consent=True)
    response = client.post(prefs_path(alice), form_data(**bad))
    assert response.status_code == 400
    alice.refresh_from_db()
    assert alice.marketing_consent is True
    assert not ConsentEvent.objects.exists()


def test_a_forged_link_shows_nothing(client):
    alice = make_subscriber()
    token = link_tokens.make_token(alice.pk)
    response = client.get(f"/preferences/{token}x/")
    assert response.status_code == 400
    assert "alice@example.com" not in response.content.decode()


def test_the_form_needs_a_csrf_token(client):
    alice = make_subscriber(marketing_consent=True)
    assert Client(enforce_csrf_checks=True).post(prefs_path(alice), form_data()).status_code == 403
    alice.refresh_from_db()
    assert alice.marketing_consent is True


# --- "Email me a link" --------------------------------------------------------------


def request_link(client, email: str = "alice@example.com", **extra):
    return client.post(REQUEST, {"email": email, **extra}, REMOTE_ADDR="203.0.113.5")


def test_asking_for_a_link_emails_one_that_works(client, mailoutbox):
    make_subscriber()
    page = request_link(client).content.decode()
    assert "Check your inbox" in page
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == "Your The Daily Courier email preferences"
    assert_email_contains(message, "/preferences/")
    assert "List-Unsubscribe" not in message.extra_headers
    path = urlsplit(link_in(message.body, "/preferences/")).path
    assert "Your email preferences" in client.get(path).content.decode()


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


def test_past_the_per_ip_limit_the_reader_gets_a_429(client, settings):
    settings.SIGNUP_RATE_PER_IP = "2/h"
    codes = [request_link(client, f"r{i}@example.com").status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_an_invalid_address_is_told_so(client, mailoutbox):
    response = request_link(client, "not an address")
    assert response.status_code == 400
    assert "Please enter a valid email address" in response.content.decode()
    assert mailoutbox == []


def test_the_honeypot_looks_like_success_but_sends_nothing(client, mailoutbox):
    make_subscriber()
    assert "Check your inbox" in request_link(client, website="http://spam.example").content.decode()
    assert mailoutbox == []
