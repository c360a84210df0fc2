"""Data rights: erasure that leaves no address behind."""

from __future__ import annotations

import io

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from alerts.common.tokens import data_tokens
from alerts.models import Batch, ConsentEvent, Delivery, Subscriber, Suppression
from alerts.subscribers.importer import import_subscribers
from tests.factories import make_delivery, make_subscriber
from tests.helpers import EMAIL, tables_containing

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def erase_url(subscriber: Subscriber) -> str:
    return reverse("alerts:erase", args=[data_tokens["erase"].make_token(subscriber.pk)])


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


def test_erasure_also_removes_signup_requests_still_waiting_for_a_worker(client, erin):
    from alerts.common.consent import RequestMeta
    from alerts.models import ConsentRequest
    from alerts.signup.services import signup_request

    signup_request(email=EMAIL, marketing=True, source="web", meta=RequestMeta(ip="203.0.113.9"))
    client.post(erase_url(erin))
    assert not ConsentRequest.objects.exists()
    assert tables_containing(EMAIL) == []
