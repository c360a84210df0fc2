"""The newsroom's view of signups: finding a reader and reading their consent history,
which nobody can edit."""

from __future__ import annotations

import pytest
from django.urls import reverse

from alerts.models import ConsentEvent, Subscriber
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:alerts_subscriber_changelist")


def test_staff_find_a_subscriber_by_searching_the_address(admin_client, alice):
    make_subscriber("bob@example.com")
    page = admin_client.get(CHANGELIST, {"q": " Alice@Example.com "}).content.decode()
    assert "alice@example.com" in page
    assert "bob@example.com" not in page


def test_staff_filter_subscribers_by_status(admin_client, alice):
    make_subscriber("bob@example.com")
    pending = admin_client.get(CHANGELIST, {"status__exact": "pending"}).content.decode()
    confirmed = admin_client.get(CHANGELIST, {"status__exact": "confirmed"}).content.decode()
    assert "alice@example.com" in pending and "bob@example.com" not in pending
    assert "bob@example.com" in confirmed and "alice@example.com" not in confirmed


def test_the_change_page_shows_the_consent_history_read_only(admin_client, alice):
    response = admin_client.get(reverse("admin:alerts_subscriber_change", args=[alice.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Consent history (evidence, read-only)" in page
    assert "Requested (awaiting confirmation)" in page  # alerts: requested
    assert "Offers, events and updates" in page  # marketing: given
    assert "Web form" in page
    assert "203.0.113.9" in page and "Mozilla/5.0 (alice)" in page
    # The rows are text, not inputs: no field of any consent event can be edited.
    assert 'name="consent_events-0-purpose"' not in page
    assert 'name="consent_events-0-action"' not in page
    assert 'name="consent_events-__prefix__' not in page  # no "add another" row
    assert 'name="consent_events-0-DELETE"' not in page


def test_the_change_page_shows_the_exact_wording_the_reader_saw(admin_client, alice):
    wording = alice.consent_events.get(purpose="marketing").wording
    page = admin_client.get(reverse("admin:alerts_subscriber_change", args=[alice.pk])).content.decode()
    assert str(wording) in page
    wording_page = admin_client.get(reverse("admin:alerts_wording_change", args=[wording.pk])).content.decode()
    assert "I would like to be emailed about offers, events and updates from The Daily Courier" in wording_page


def test_saving_a_subscriber_leaves_the_consent_history_alone(admin_client, alice):
    before = list(ConsentEvent.objects.values_list("id", "purpose", "action", "source"))
    url = reverse("admin:alerts_subscriber_change", args=[alice.pk])
    response = admin_client.post(url, {
        "frequency": "daily", "time_zone": "",
        "consent_events-TOTAL_FORMS": "0", "consent_events-INITIAL_FORMS": "0",
        "consent_events-MIN_NUM_FORMS": "0", "consent_events-MAX_NUM_FORMS": "1000",
    })
    assert response.status_code == 302
    assert Subscriber.objects.get(pk=alice.pk).frequency == "daily"
    assert list(ConsentEvent.objects.values_list("id", "purpose", "action", "source")) == before


def test_consent_events_cannot_be_added_changed_or_deleted(admin_client, alice):
    event = alice.consent_events.first()
    changelist = admin_client.get(reverse("admin:alerts_consentevent_changelist")).content.decode()
    assert reverse("admin:alerts_consentevent_add") not in changelist
    assert admin_client.get(reverse("admin:alerts_consentevent_add")).status_code == 403
    change = admin_client.get(reverse("admin:alerts_consentevent_change", args=[event.pk]))
    assert change.status_code == 200  # viewable
    assert 'name="_save"' not in change.content.decode()
    assert admin_client.post(reverse("admin:alerts_consentevent_change", args=[event.pk]),
                             {"action": "withdrawn"}).status_code == 403
    assert admin_client.post(reverse("admin:alerts_consentevent_delete", args=[event.pk]),
                             {"post": "yes"}).status_code == 403
    assert ConsentEvent.objects.get(pk=event.pk).action == event.action


def test_the_bulk_delete_action_is_not_offered_for_consent_events(admin_client, alice):
    changelist = admin_client.get(reverse("admin:alerts_consentevent_changelist")).content.decode()
    assert "delete_selected" not in changelist


def test_staff_cannot_create_subscribers_by_hand(admin_client):
    assert admin_client.get(reverse("admin:alerts_subscriber_add")).status_code == 403
