"""The pages a reader reaches from a link in an email: unsubscribe and undo on our own
page, the preference centre (signed link, no password), and asking for a fresh link."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from alerts.common.tokens import link_tokens
from alerts.models import ConsentEvent, Subscriber
from tests.factories import make_subscriber
from tests.helpers import (
    ONE_CLICK,
    assert_email_contains,
    form_data,
    link_in,
    prefs_path,
    request_link,
    unsubscribe_path,
    withdrawals,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


# --- Unsubscribing on our own page ----------------------------------------------------


@pytest.mark.django_db
def test_the_button_on_our_page_unsubscribes_and_is_recorded_as_an_email_link(client):
    alice = make_subscriber()
    page = client.post(unsubscribe_path(alice)).content.decode()
    assert "You have been unsubscribed" in page
    assert "Undo" in page
    assert list(withdrawals(alice).values_list("source", flat=True)) == ["email_link"]


@pytest.mark.django_db
def test_an_erased_readers_link_says_unsubscribed_without_an_undo(client):
    alice = make_subscriber()
    path = unsubscribe_path(alice)
    alice.delete()
    response = client.post(path, ONE_CLICK)
    assert response.status_code == 200
    assert "You have been unsubscribed" in response.content.decode()
    assert "Undo" not in response.content.decode()


@pytest.mark.django_db
def test_undo_needs_a_post_with_a_csrf_token(client):
    alice = make_subscriber(status=Subscriber.Status.UNSUBSCRIBED, unsubscribed_at=timezone.now())
    path = f"/u/{link_tokens.make_token(alice.pk)}/undo/"
    assert client.get(path).status_code == 405
    assert Client(enforce_csrf_checks=True).post(path).status_code == 403
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


# --- The preference centre ------------------------------------------------------------


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


# --- "Email me a link" ----------------------------------------------------------------


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
