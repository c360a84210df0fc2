"""The signup pages, the newsroom's own and the embeddable one: what the reader sees,
the confirmation they are sent, and confirming."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from alerts.common.addresses import email_hmac
from alerts.models import ConsentEvent, Subscriber, Suppression
from tests.factories import make_subscriber
from tests.helpers import PARTNER, SIGNUP, assert_email_contains, link_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def test_the_signup_page_shows_the_newsroom_box(client):
    page = client.get(SIGNUP).content.decode()
    assert "Sign up to our free breaking news emails" in page
    assert "I would like to be emailed about offers, events and updates from The Daily Courier" in page
    assert "Read our privacy notice" in page
    assert "SIGN UP" in page
    assert 'name="marketing" id="id_marketing">' in page  # unticked by default


def test_an_invalid_address_gets_the_message_and_keeps_the_text(client, post_signup, mailoutbox):
    response = post_signup(client, email="not-an-address")
    page = response.content.decode()
    assert response.status_code == 400
    assert "Please enter a valid email address" in page
    assert 'value="not-an-address"' in page
    assert 'aria-invalid="true"' in page
    assert Subscriber.objects.count() == 0
    assert mailoutbox == []


@pytest.mark.parametrize("raw", [
    "alice@localhost", "Alice <alice@example.com>", "a@example.com, b@example.com",
    "alice@example.com\r\nBcc: victim@example.com", "", "a" * 65 + "@example.com", "alice@exa mple.com",
])
def test_undeliverable_or_injected_addresses_are_refused(client, post_signup, raw, mailoutbox):
    response = post_signup(client, email=raw)
    assert response.status_code == 400
    assert "Please enter a valid email address" in response.content.decode()
    assert not Subscriber.objects.exists()
    assert mailoutbox == []


def test_signing_up_thanks_the_reader_and_sends_a_neutral_confirmation(client, post_signup, mailoutbox):
    response = post_signup(client, email="  Alice@Example.COM ")
    page = response.content.decode()
    assert "Thanks for signing up to the breaking news emails" in page
    assert "confirm" in page
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "Alice@example.com"
    assert subscriber.status == Subscriber.Status.PENDING
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["Alice@example.com"]
    assert message.subject == "Confirm your subscription to The Daily Courier's breaking news emails"
    assert_email_contains(message, "/confirm/")
    assert "List-Unsubscribe" not in message.extra_headers


def test_confirming_needs_a_post_and_records_the_confirmation(client, post_signup, mailoutbox):
    post_signup(client, marketing="on")
    link = link_in(mailoutbox[0].body, "/confirm/")
    path = urlsplit(link).path
    assert "Confirm" in client.get(path).content.decode()
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING  # GET changes nothing

    page = client.post(path, REMOTE_ADDR="198.51.100.7").content.decode()
    assert "You're subscribed" in page
    subscriber = Subscriber.objects.get()
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.marketing_consent is True
    confirmed = subscriber.consent_events.filter(action="confirmed")
    assert sorted(confirmed.values_list("purpose", flat=True)) == ["alerts", "marketing"]
    assert {e.ip_address for e in confirmed} == {"198.51.100.7"}


def test_confirming_twice_is_harmless(client, post_signup, mailoutbox):
    post_signup(client)
    path = urlsplit(link_in(mailoutbox[0].body, "/confirm/")).path
    client.post(path)
    again = client.post(path)
    assert again.status_code == 200
    assert "already subscribed" in again.content.decode()
    assert ConsentEvent.objects.filter(action="confirmed").count() == 1


def test_a_tampered_confirmation_link_changes_nothing(client, post_signup, mailoutbox):
    post_signup(client)
    path = urlsplit(link_in(mailoutbox[0].body, "/confirm/")).path
    response = client.post(path.replace("/confirm/", "/confirm/x"))
    assert response.status_code == 400
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING


def test_an_expired_link_offers_a_new_one(client, post_signup, mailoutbox, monkeypatch, settings,
                                          django_capture_on_commit_callbacks):
    settings.CONFIRM_COOLDOWN_SECONDS = 1
    post_signup(client)
    path = urlsplit(link_in(mailoutbox[0].body, "/confirm/")).path
    import time

    from alerts.common.tokens import confirm_tokens

    monkeypatch.setattr(confirm_tokens, "_now", lambda: time.time() + 49 * 3600)
    page = client.post(path).content.decode()
    assert "This link has expired" in page
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING
    monkeypatch.undo()
    from django.core.cache import cache

    cache.clear()  # past the per-address cooldown
    with django_capture_on_commit_callbacks(execute=True):  # the outbox is sent after the commit
        client.post(path + "resend/")
    assert len(mailoutbox) == 2


@pytest.mark.parametrize("state", ["new", "pending", "confirmed", "unsubscribed", "suppressed"])
def test_every_kind_of_address_gets_the_same_answer(client, post_signup, state):
    email = "known@example.com"
    if state == "pending":
        make_subscriber(email, status=Subscriber.Status.PENDING)
    elif state == "confirmed":
        make_subscriber(email)
    elif state == "unsubscribed":
        make_subscriber(email, status=Subscriber.Status.UNSUBSCRIBED)
    elif state == "suppressed":
        Suppression.objects.create(email_hmac=email_hmac(email), reason="complained")
    response = post_signup(client, email=email)
    reference = post_signup(client, email="someone-else@example.com")
    assert response.status_code == reference.status_code == 200
    assert response.content.decode().replace(email, "X") == \
        reference.content.decode().replace("someone-else@example.com", "X")


def test_the_honeypot_looks_like_success_but_stores_and_sends_nothing(client, post_signup, mailoutbox):
    response = post_signup(client, website="http://spam.example")
    assert "Thanks for signing up" in response.content.decode()
    assert not Subscriber.objects.exists()
    assert mailoutbox == []


def test_past_the_per_ip_limit_the_reader_gets_a_friendly_429(client, post_signup, settings):
    settings.SIGNUP_RATE_PER_IP = "3/h"
    codes = [post_signup(client, email=f"r{i}@example.com").status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]
    assert "Please try again later" in post_signup(client).content.decode()


def test_the_form_needs_a_csrf_token(client):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert strict.post(SIGNUP, {"email": "alice@example.com"}).status_code == 403
    assert not Subscriber.objects.exists()


def test_a_mistyped_common_domain_gets_a_suggestion_without_blocking(client, post_signup):
    page = post_signup(client, email="alice@gmial.com").content.decode()
    assert "Thanks for signing up" in page
    assert "Did you mean alice@gmail.com?" in page
    assert Subscriber.objects.filter(email="alice@gmial.com").exists()


# --- The embeddable form, on another site's page --------------------------------------


def test_the_embed_refuses_a_post_from_a_foreign_page(client, settings):
    settings.EMBED_FRAME_ANCESTORS = [PARTNER]
    response = client.post("/embed/", {"email": "alice@example.com"}, HTTP_ORIGIN=PARTNER)
    assert response.status_code == 403
    assert not Subscriber.objects.exists()


def test_the_embed_refuses_a_post_with_no_origin_at_all(client):
    assert client.post("/embed/", {"email": "alice@example.com"}).status_code == 403
    assert not Subscriber.objects.exists()


def test_the_embed_accepts_its_own_form_and_records_the_embed_source(client, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/embed/", {"email": "alice@example.com"}, HTTP_ORIGIN="http://testserver")
    assert response.status_code == 200
    assert "Thanks for signing up to the breaking news emails" in response.content.decode()
    assert ConsentEvent.objects.get().source == "embed"
    assert len(mailoutbox) == 1


def test_the_embed_may_be_framed_by_the_configured_sites_only(client, settings):
    settings.EMBED_FRAME_ANCESTORS = [PARTNER, "https://partner.example.org"]
    response = client.get("/embed/")
    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["frame-ancestors"] == f"'self' {PARTNER} https://partner.example.org"
    assert policy["script-src"] == "'self'"  # the rest of the site's policy still holds
    assert "X-Frame-Options" not in response


def test_the_embed_keeps_its_framing_policy_when_the_address_is_refused(client, settings):
    settings.EMBED_FRAME_ANCESTORS = [PARTNER]
    response = client.post("/embed/", {"email": "nope"}, HTTP_ORIGIN="http://testserver")
    assert response.status_code == 400
    assert "Please enter a valid email address" in response.content.decode()
    assert PARTNER in response["Content-Security-Policy"]
    assert "X-Frame-Options" not in response


def test_the_embed_explains_the_rate_limit_inside_the_frame(client, settings):
    settings.SIGNUP_RATE_PER_IP = "1/h"
    settings.EMBED_FRAME_ANCESTORS = [PARTNER]
    client.post("/embed/", {"email": "a@example.com"}, HTTP_ORIGIN="http://testserver")
    response = client.post("/embed/", {"email": "b@example.com"}, HTTP_ORIGIN="http://testserver")
    assert response.status_code == 429
    assert "Please try again later" in response.content.decode()
    # Otherwise the partner's page shows a blank, refused frame instead of the message.
    assert "X-Frame-Options" not in response
    assert PARTNER in response["Content-Security-Policy"]


def test_the_normal_signup_page_cannot_be_framed(client):
    assert client.get("/")["X-Frame-Options"] == "DENY"
