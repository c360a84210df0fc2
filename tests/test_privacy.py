"""Data rights: downloading what we hold, and erasure that leaves no address behind."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.urls import reverse

import alerts.subscribers.admin  # noqa: F401  (registers SuppressionAdmin)
from alerts.common.consent import RequestMeta, record_consent
from alerts.common.tokens import link_tokens
from alerts.models import Batch, ConsentEvent, Delivery, Subscriber, Suppression, TrackingEvent
from alerts.rights.admin import erase_subscribers, export_subscriber_data
from alerts.subscribers.admin import SubscriberAdmin
from alerts.subscribers.importer import import_subscribers
from tests.factories import make_delivery, make_subscriber

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

EMAIL = "Erin.Erase@example.com"


@pytest.fixture
def erin() -> Subscriber:
    """A subscriber whose address has found its way into every corner."""
    erin = make_subscriber(EMAIL, marketing_consent=True, time_zone="Europe/Berlin")
    record_consent(subscriber=erin, purpose="alerts", action="confirmed", source="web",
                            meta=RequestMeta(ip="203.0.113.7", user_agent="Mozilla/5.0"))
    delivery = make_delivery(erin, headline="Breaking: the budget", status="failed")
    delivery.error = f"Recipient {EMAIL} refused"
    delivery.save()
    delivery.batch.last_error = f"550 for {EMAIL.lower()}; others fine"
    delivery.batch.save()
    TrackingEvent.objects.create(event_id="mg:1", event_type="bounced", recipient_hmac=erin.email_hmac,
                                 description=f"bounce for {EMAIL}")
    Suppression.objects.create(email_hmac=erin.email_hmac, reason="manual", detail=f"old note {EMAIL}",
                               lifted_at=erin.created_at, lift_reason="test")
    return erin


def data_url(subscriber: Subscriber) -> str:
    return reverse("alerts:data_export", args=[link_tokens.make_token(subscriber.pk)])


def erase_url(subscriber: Subscriber) -> str:
    return reverse("alerts:erase", args=[link_tokens.make_token(subscriber.pk)])


def tables_containing(text: str) -> list[str]:
    """Every table.column (text-like, any table) whose value contains `text`, any case."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type IN "
            "('text', 'character varying', 'character', 'json', 'jsonb')")
        columns = cursor.fetchall()
        hits = []
        for table, column in columns:
            quoted_table, quoted_column = connection.ops.quote_name(table), connection.ops.quote_name(column)
            cursor.execute(f"SELECT count(*) FROM {quoted_table} WHERE {quoted_column}::text ILIKE %s",
                           [f"%{text}%"])
            if cursor.fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits


# --- Download --------------------------------------------------------------------------


def test_the_data_page_shows_a_download_button_and_no_data(client, erin):
    page = client.get(data_url(erin)).content.decode()
    assert "Download</button>" in page
    assert EMAIL not in page


def test_downloading_returns_everything_as_a_json_attachment(client, erin):
    response = client.post(data_url(erin))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith("attachment;")
    assert "no-store" in response["Cache-Control"]
    data = json.loads(response.content)
    assert data["subscription"]["email"] == EMAIL
    assert data["subscription"]["marketing_consent"] is True
    assert data["subscription"]["time_zone"] == "Europe/Berlin"
    consent = data["consent_history"][0]
    assert (consent["purpose"], consent["action"], consent["ip_address"]) == ("alerts", "confirmed", "203.0.113.7")
    assert "breaking news" in consent["wording_shown"]
    assert data["deliveries"][0]["email"] == "Breaking: the budget"
    assert data["suppressions"][0]["reason"] == "Added by staff"


def test_a_forged_data_link_shows_and_sends_nothing(client, erin):
    token = link_tokens.make_token(erin.pk)
    for method in (client.get, client.post):
        response = method(f"/data/{token}0/")
        assert response.status_code == 400
        assert EMAIL not in response.content.decode()


# --- Erasure ---------------------------------------------------------------------------


def test_the_erase_page_asks_first_and_changes_nothing(client, erin):
    page = client.get(erase_url(erin)).content.decode()
    assert "Erase my data</button>" in page
    assert Subscriber.objects.filter(pk=erin.pk).exists()


def test_erasure_leaves_no_plaintext_address_in_any_table(client, erin, admin_user):
    bob = make_subscriber("bob@example.com")
    LogEntry.objects.create(user=admin_user, content_type=ContentType.objects.get_for_model(Subscriber),
                            object_id=str(erin.pk), object_repr=EMAIL, action_flag=CHANGE,
                            change_message="[]")
    LogEntry.objects.create(user=admin_user, content_type=ContentType.objects.get_for_model(Subscriber),
                            object_id=str(bob.pk), object_repr="bob@example.com", action_flag=CHANGE,
                            change_message=f"Merged duplicate {EMAIL.upper()}")
    assert len(tables_containing(EMAIL)) >= 6  # the scan does find it everywhere first

    page = client.post(erase_url(erin)).content.decode()

    assert "Your data has been erased" in page
    assert tables_containing(EMAIL) == []
    assert not Subscriber.objects.filter(pk=erin.pk).exists()
    assert not ConsentEvent.objects.filter(subscriber_id=erin.pk).exists()
    suppression = Suppression.objects.get(email_hmac=erin.email_hmac, lifted_at__isnull=True)
    assert suppression.reason == Suppression.Reason.ERASED
    assert tables_containing("bob@example.com")  # nobody else is touched


def test_erasure_deletes_the_readers_ledger_rows_and_nobody_elses(client, erin):
    bob = make_subscriber("bob@example.com")
    bobs = make_delivery(bob, headline="Breaking: the vote")
    make_delivery(erin, headline="Breaking: the vote", status="delivered")
    batch = Batch.objects.create(first_subscriber_id=erin.pk, last_subscriber_id=bob.pk)
    for reader in (erin, bob):
        Delivery.objects.create(subscriber=reader, digest_key="daily:2026-11-26", batch=batch, status="sent")
    assert Delivery.objects.filter(subscriber_id=erin.pk).count() == 3

    client.post(erase_url(erin))

    assert not Delivery.objects.filter(subscriber_id=erin.pk).exists()
    assert set(Delivery.objects.values_list("subscriber_id", "digest_key")) == {
        (bob.pk, ""), (bob.pk, "daily:2026-11-26")}
    assert Delivery.objects.filter(pk=bobs.pk).exists()


def test_erasing_twice_is_harmless(client, erin):
    url = erase_url(erin)
    assert client.post(url).status_code == 200
    assert client.post(url).status_code == 200
    assert client.get(url).status_code == 400  # nothing left to show


def test_after_erasure_an_import_is_refused_and_a_signup_needs_a_fresh_opt_in(
    client, erin, mailoutbox, django_capture_on_commit_callbacks
):
    client.post(erase_url(erin))
    lines = io.StringIO("email,consent_given_at,consent_source,consent_wording\n"
                        f"{EMAIL},2025-01-01T00:00:00Z,old provider,Sign up\n")
    results = []
    import_subscribers(lines, report=results.append)
    assert (results[0].outcome, results[0].category) == ("skipped", "suppressed")

    with django_capture_on_commit_callbacks(execute=True):
        client.post("/", {"email": EMAIL})
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING
    assert [m.to for m in mailoutbox] == [[EMAIL]]


# --- Staff actions ---------------------------------------------------------------------


@pytest.fixture
def subscriber_actions(monkeypatch):
    # What the owner of admin.py adds: SubscriberAdmin.actions = [..., these two].
    monkeypatch.setattr(SubscriberAdmin, "actions", [export_subscriber_data, erase_subscribers])


def test_staff_can_download_a_subscribers_data(admin_client, erin, subscriber_actions):
    response = admin_client.post("/admin/alerts/subscriber/",
                                 {"action": "export_subscriber_data", "_selected_action": [erin.pk]})
    assert response["Content-Disposition"].startswith("attachment;")
    [data] = json.loads(response.content)
    assert data["subscription"]["email"] == EMAIL


def test_staff_erase_after_confirming(admin_client, admin_user, erin, subscriber_actions):
    changelist = "/admin/alerts/subscriber/"
    confirm = admin_client.post(changelist, {"action": "erase_subscribers", "_selected_action": [erin.pk]})
    assert "Erase 1 subscriber?" in confirm.content.decode()
    assert Subscriber.objects.filter(pk=erin.pk).exists()

    done = admin_client.post(changelist, {"action": "erase_subscribers", "_selected_action": [erin.pk],
                                          "confirm_erase": "yes"})
    assert done.status_code == 302
    assert not Subscriber.objects.filter(pk=erin.pk).exists()
    assert tables_containing(EMAIL) == []
    suppression = Suppression.objects.get(email_hmac=erin.email_hmac, lifted_at__isnull=True)
    assert suppression.detail == f"Erased by staff user {admin_user.pk}"
