"""RFC 8058 one-click unsubscribe, the confirm page a GET shows, and the undo."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts.common.tokens import link_tokens
from alerts.models import ConsentEvent, Delivery, Subscriber, Suppression
from tests.factories import make_delivery, make_subscriber

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


pytestmark = pytest.mark.usefixtures("eager_celery")


def unsubscribe_path(subscriber: Subscriber) -> str:
    return reverse("alerts:unsubscribe", args=[link_tokens.make_token(subscriber.pk)])


def withdrawals(subscriber: Subscriber):
    return ConsentEvent.objects.filter(subscriber=subscriber, purpose="alerts", action="withdrawn")


# --- Over real HTTP, as a mailbox provider sends it ----------------------------------


def test_a_one_click_post_without_cookies_unsubscribes_at_once(live_server):
    alice = make_subscriber(marketing_consent=True)
    response = requests.post(live_server.url + unsubscribe_path(alice), data=ONE_CLICK,
                             allow_redirects=False, timeout=10)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "You have been unsubscribed" in response.text
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED
    assert alice.marketing_consent is True  # the other purpose is untouched
    assert list(withdrawals(alice).values_list("source", flat=True)) == ["one_click"]


def test_a_multipart_one_click_post_works_too(live_server):
    alice = make_subscriber()
    response = requests.post(live_server.url + unsubscribe_path(alice),
                             files={"List-Unsubscribe": (None, "One-Click")},
                             allow_redirects=False, timeout=10)
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


def test_a_get_or_head_changes_nothing(live_server):
    alice = make_subscriber()
    url = live_server.url + unsubscribe_path(alice)
    page = requests.get(url, allow_redirects=False, timeout=10)
    head = requests.head(url, allow_redirects=False, timeout=10)
    assert page.status_code == head.status_code == 200
    assert "Unsubscribe</button>" in page.text
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.CONFIRMED
    assert not ConsentEvent.objects.exists()


def test_repeating_the_one_click_post_is_harmless(live_server):
    alice = make_subscriber()
    url = live_server.url + unsubscribe_path(alice)
    codes = [requests.post(url, data=ONE_CLICK, allow_redirects=False, timeout=10).status_code
             for _ in range(3)]
    assert codes == [200, 200, 200]
    assert withdrawals(alice).count() == 1


# --- Tokens: forged, old, rotated keys -----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/u/garbage/", "/u/1:1:abc/", "TAMPERED"])
def test_a_forged_or_tampered_token_changes_nothing_and_reveals_nothing(client, path):
    alice = make_subscriber()
    if path == "TAMPERED":
        token = link_tokens.make_token(alice.pk)
        path = f"/u/{token[:-2]}xx/"
    nobody = client.post("/u/not-a-token-at-all/", ONE_CLICK)
    response = client.post(path, ONE_CLICK)
    assert response.status_code == nobody.status_code == 400
    assert response.content == nobody.content
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.CONFIRMED


@pytest.mark.django_db
def test_a_token_for_another_subscriber_id_cannot_be_made_by_editing(client):
    alice, bob = make_subscriber(), make_subscriber("bob@example.com")
    token = link_tokens.make_token(alice.pk)
    forged = f"{bob.pk}{token[len(str(alice.pk)):]}"
    assert client.post(f"/u/{forged}/", ONE_CLICK).status_code == 400
    bob.refresh_from_db()
    assert bob.status == Subscriber.Status.CONFIRMED


@pytest.mark.django_db
def test_links_mailed_months_ago_still_unsubscribe(client, monkeypatch):
    alice = make_subscriber()
    monkeypatch.setattr(link_tokens, "_now", lambda: time.time() - 200 * 24 * 3600)
    path = unsubscribe_path(alice)
    monkeypatch.undo()
    assert client.post(path, ONE_CLICK).status_code == 200
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


@pytest.mark.django_db
def test_even_an_expired_link_still_unsubscribes(client, monkeypatch, settings):
    # Honouring an old unsubscribe link can only ever stop mail.
    alice = make_subscriber()
    monkeypatch.setattr(link_tokens, "_now", lambda: time.time() - settings.SUBSCRIBER_LINK_MAX_AGE - 3600)
    path = unsubscribe_path(alice)
    monkeypatch.undo()
    assert client.post(path, ONE_CLICK).status_code == 200
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


@pytest.mark.django_db
def test_links_survive_a_secret_key_rotation(client, settings):
    alice = make_subscriber()
    old_key = settings.SECRET_KEY
    path = unsubscribe_path(alice)
    settings.SECRET_KEY = "a-brand-new-secret-key-" + "n" * 30
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert client.post(path, ONE_CLICK).status_code == 200
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


@pytest.mark.django_db
def test_without_the_old_key_in_fallbacks_a_rotated_link_is_refused(client, settings):
    alice = make_subscriber()
    path = unsubscribe_path(alice)
    settings.SECRET_KEY = "a-brand-new-secret-key-" + "n" * 30
    settings.SECRET_KEY_FALLBACKS = []
    assert client.post(path, ONE_CLICK).status_code == 400


# --- Our own pages -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_button_on_our_page_unsubscribes_and_is_recorded_as_an_email_link(client):
    alice = make_subscriber()
    page = client.post(unsubscribe_path(alice)).content.decode()
    assert "You have been unsubscribed" in page
    assert "Undo" in page
    assert list(withdrawals(alice).values_list("source", flat=True)) == ["email_link"]


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
def test_an_erased_readers_link_says_unsubscribed_without_an_undo(client):
    alice = make_subscriber()
    path = unsubscribe_path(alice)
    alice.delete()
    response = client.post(path, ONE_CLICK)
    assert response.status_code == 200
    assert "You have been unsubscribed" in response.content.decode()
    assert "Undo" not in response.content.decode()


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


@pytest.mark.django_db
def test_undo_needs_a_post_with_a_csrf_token(client):
    alice = make_subscriber(status=Subscriber.Status.UNSUBSCRIBED, unsubscribed_at=timezone.now())
    path = f"/u/{link_tokens.make_token(alice.pk)}/undo/"
    assert client.get(path).status_code == 405
    assert Client(enforce_csrf_checks=True).post(path).status_code == 403
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


# --- The link tokens themselves ----------------------------------------------------


def test_bulk_made_link_tokens_are_djangos_own_timestamp_signatures(settings):
    from django.core import signing

    from alerts.common.tokens import LINK_SALT

    settings.SECRET_KEY = "another-secret-key-" * 5
    make = link_tokens.bulk_maker()
    signer = signing.TimestampSigner(salt=LINK_SALT)
    for subscriber_id in (1, 42, 10**12):
        token = make(subscriber_id)
        assert signer.unsign(token, max_age=60) == str(subscriber_id)
        assert link_tokens.read(token) == subscriber_id
    token = make(7)
    with pytest.raises(signing.BadSignature):
        signer.unsign(token[:-1] + ("A" if token[-1] != "A" else "B"), max_age=60)
