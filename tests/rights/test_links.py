"""Per-purpose links: the unsubscribe token that travels in every alert (and every
forwarded one) opens no data; downloading or erasing takes a fresh, single-use link,
emailed on request, that expires within the hour; every export and erasure is
recorded."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from alerts.common.tokens import data_tokens, link_tokens
from alerts.models import RightsEvent, Subscriber
from alerts.subscribers.services import subscriber_revoke_links
from tests.helpers import EMAIL, link_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def test_the_token_of_a_forwarded_alert_opens_no_data(client, erin):
    # What a forwarded alert, a link scanner or a mailbox provider holds: the
    # List-Unsubscribe token. It used to download everything and erase.
    token = link_tokens.make_token(erin.pk)
    for url in (reverse("alerts:data_export", args=[token]), reverse("alerts:erase", args=[token])):
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 400
            assert EMAIL not in response.content.decode()
            assert not response.get("Content-Disposition")
    assert Subscriber.objects.filter(pk=erin.pk).exists()
    assert not RightsEvent.objects.exists()


def request_link(client, erin, purpose: str, mailoutbox) -> str:
    prefs = reverse("alerts:preferences", args=[link_tokens.make_token(erin.pk)])
    page = client.get(prefs).content.decode()
    assert "Email me a link to download my data" in page
    response = client.post(reverse("alerts:data_request", args=[link_tokens.make_token(erin.pk)]),
                           {"purpose": purpose})
    assert response.status_code == 200
    assert "Check your inbox" in response.content.decode()
    message = mailoutbox[-1]
    assert message.to == [EMAIL]
    return urlsplit(link_in(message.body, "/data/")).path


def test_a_download_link_is_emailed_on_request_and_works_once(client, erin, mailoutbox):
    path = request_link(client, erin, "export", mailoutbox)
    assert "works once, for 60 minutes" in mailoutbox[-1].body
    assert client.get(path).status_code == 200
    first = client.post(path)
    assert first.status_code == 200
    assert json.loads(first.content)["subscription"]["email"] == EMAIL
    assert client.post(path).status_code == 400  # used
    event = RightsEvent.objects.get()
    assert (event.kind, event.via, event.subscriber_ref, event.actor) == ("export", "email_link", erin.pk, None)


def test_a_download_link_expires_within_the_hour(client, erin, monkeypatch):
    token = data_tokens["export"].make_token(erin.pk)
    monkeypatch.setattr(data_tokens["export"], "_now", lambda: time.time() + 3601)
    assert client.post(reverse("alerts:data_export", args=[token])).status_code == 400


def test_an_erasure_link_is_emailed_on_request_and_the_erasure_recorded(client, erin, mailoutbox):
    path = request_link(client, erin, "erase", mailoutbox)
    assert path.endswith("/erase/")
    assert "Erase my data</button>" in client.get(path).content.decode()
    assert "erased" in client.post(path).content.decode()
    assert not Subscriber.objects.filter(pk=erin.pk).exists()
    event = RightsEvent.objects.get()
    assert (event.kind, event.via, event.subscriber_ref) == ("erasure", "email_link", erin.pk)


def test_an_export_link_cannot_erase_nor_an_erasure_link_export(client, erin):
    export, erase = data_tokens["export"].make_token(erin.pk), data_tokens["erase"].make_token(erin.pk)
    assert client.post(reverse("alerts:erase", args=[export])).status_code == 400
    assert client.post(reverse("alerts:data_export", args=[erase])).status_code == 400
    assert Subscriber.objects.filter(pk=erin.pk).exists()


def test_revoked_links_open_nothing(client, erin):
    token = data_tokens["export"].make_token(erin.pk)
    subscriber_revoke_links(subscriber_ids=[erin.pk])
    assert client.post(reverse("alerts:data_export", args=[token])).status_code == 400


def test_asking_for_links_is_limited_per_address(client, erin, mailoutbox):
    for _ in range(3):
        client.post(reverse("alerts:data_request", args=[link_tokens.make_token(erin.pk)]),
                    {"purpose": "export"})
    assert len(mailoutbox) == 1


@pytest.mark.parametrize("purpose", ["", "delete", "export\x00"])
def test_a_bad_request_for_a_link_sends_nothing(client, erin, mailoutbox, purpose):
    response = client.post(reverse("alerts:data_request", args=[link_tokens.make_token(erin.pk)]),
                           {"purpose": purpose})
    assert response.status_code == 400
    assert mailoutbox == []


# --- Marketing ticked in the preference centre ----------------------------------------


def test_marketing_ticked_in_the_preference_centre_waits_for_the_emailed_confirmation(
        client, mailoutbox, django_capture_on_commit_callbacks):
    from tests.factories import make_subscriber
    from tests.helpers import form_data, prefs_path

    alice = make_subscriber()
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(prefs_path(alice), form_data(marketing="on")).content.decode()
    assert "emailed you a link to confirm" in page
    alice.refresh_from_db()
    assert alice.marketing_consent is False  # a forwarded alert's reader cannot give it
    message = mailoutbox[-1]
    assert message.to == ["alice@example.com"]
    assert message.subject == "Confirm: offers, events and updates from The Daily Courier"
    path = urlsplit(link_in(message.body, "/confirm/")).path
    assert "Thank you" in client.post(path).content.decode()
    alice.refresh_from_db()
    assert (alice.marketing_consent, alice.status) == (True, Subscriber.Status.CONFIRMED)
    assert alice.consent_events.filter(purpose="marketing", action="confirmed", source="email_link").exists()
