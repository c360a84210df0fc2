"""Signed links: forged, edited, old and rotated-key tokens, tried on the unsubscribe
link, and the bulk maker the fan-out uses."""

from __future__ import annotations

import time

import pytest

from alerts.common.tokens import link_tokens
from alerts.models import Subscriber
from tests.factories import make_subscriber
from tests.helpers import ONE_CLICK, unsubscribe_path

pytestmark = pytest.mark.usefixtures("eager_celery")


# --- Tokens: forged, old, rotated keys ------------------------------------------------


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


# --- The link tokens themselves -------------------------------------------------------


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
