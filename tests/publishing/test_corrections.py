"""Corrections and updates: a follow-up reaches exactly the readers the ledger says
received the original, still subscribed, once each, threaded under the original."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.models import Alert, Batch, Delivery, Subscriber, Suppression, Topic
from alerts.publishing import corrections, fanout
from alerts.publishing.corrections import FollowUpRefused, send_follow_up
from alerts.publishing.progress import alert_progress
from alerts.publishing.services import alert_publish
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all, wait_until

HEADLINE = "North Korea fires two ballistic missiles"


def seed_readers(n: int) -> list[Subscriber]:
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Subscriber.objects.bulk_create([
        Subscriber(email=f"reader{i}@example.com", email_hmac=email_hmac(f"reader{i}@example.com"),
                   status=Subscriber.Status.CONFIRMED, confirmed_at=an_hour_ago) for i in range(n)])
    return list(Subscriber.objects.order_by("pk"))


def wait_for_finish(alert: Alert, timeout: float = 60) -> Alert:
    def finished():
        alert.refresh_from_db()
        return alert.status not in (Alert.Status.SENDING, Alert.Status.SCHEDULED)
    wait_until(finished, timeout=timeout, message=f"alert still {alert.status}: {alert_progress(alert)}")
    return alert


def calls_of(fake, alert: Alert):
    return [call for call in fake.calls if call.variables.get("alert_id") == str(alert.pk)]


@pytest.mark.worker
def test_a_correction_reaches_exactly_the_original_recipients_still_subscribed_once_each_threaded(
        celery_worker_process, fake_mailgun):
    readers = seed_readers(700)  # the worker cuts batches of 250
    original = Alert.objects.create(headline=HEADLINE, standfirst="Hours before the summit",
                                    url="https://news.example.com/nk")
    original.topics.set([Topic.objects.create(name="World", slug="world")])
    assert alert_publish(alert_id=original.pk)
    wait_for_finish(original)
    got_original = {r for call in calls_of(fake_mailgun, original) for r in call.recipients}
    assert len(got_original) == 700
    message_of = {r: call.message_id for call in calls_of(fake_mailgun, original) for r in call.recipients}

    # Since the original: one reader left, one was suppressed, and one joined.
    left, suppressed = readers[10], readers[400]
    left.mark_unsubscribed()
    left.save()
    Suppression.objects.create(email_hmac=suppressed.email_hmac, reason="bounced")
    make_subscriber("newcomer@example.com")
    # The worker cuts the follow-up with the same batch size, but two readers fewer:
    # its batches straddle the original's, so one batch threads under two originals.
    assert corrections.follow_up_audience_count(original) == 698

    follow_up = send_follow_up(original, kind="correction", headline="Only one missile was fired",
                               standfirst="We said two earlier: it was one", by=None)
    assert follow_up.kind == Alert.Kind.CORRECTION and follow_up.follow_up_of_id == original.pk
    wait_for_finish(follow_up)
    assert follow_up.status == Alert.Status.SENT

    calls = calls_of(fake_mailgun, follow_up)
    received = [r for call in calls for r in call.recipients]
    assert sorted(received) == sorted(got_original - {left.email, suppressed.email})
    assert len(received) == len(set(received))  # once each
    ledger = set(Delivery.objects.filter(alert=follow_up, status=Delivery.Status.SENT)
                 .values_list("subscriber__email", flat=True))
    assert ledger == set(received)
    for call in calls:
        assert call.first("subject") == "Correction: Only one missile was fired"
        headers = call.custom_headers
        # Each call's readers all had the same copy of the original, and it names it.
        assert {message_of[r] for r in call.recipients} == {headers["In-Reply-To"]}
        assert headers["References"] == headers["In-Reply-To"]
        assert "This corrects our alert of" in call.first("text")
    assert len(calls) > len(Batch.objects.filter(alert=follow_up))  # straddling batches: two calls
    progress = alert_progress(follow_up)
    assert progress.sent == 698 and progress.remaining == 0


@pytest.fixture
def sent_original(alert, mailgun, settings):
    """An alert sent in-process to three readers, through the fake Mailgun."""
    for name in ("ann", "bob", "cat"):
        make_subscriber(f"{name}@example.com", confirmed_at=timezone.now() - timedelta(hours=1))
    send_all(publish_and_cut(alert, batch_size=2, settings=settings))
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    alert.refresh_from_db()
    return alert


@pytest.mark.django_db
def test_an_update_goes_out_with_update_in_the_subject_through_the_same_batches(sent_original, mailgun, settings):
    original_ids = {call.recipients[0]: call.message_id for call in mailgun.calls}
    follow_up = send_follow_up(sent_original, kind="update", headline="Summit goes ahead")
    mailgun.reset()
    fanout.alert_fan_out(alert_id=follow_up.pk)
    send_all(list(Batch.objects.filter(alert=follow_up).order_by("first_subscriber_id")))
    assert [call.first("subject") for call in mailgun.calls] == ["Update: Summit goes ahead"] * len(mailgun.calls)
    for call in mailgun.calls:
        assert call.custom_headers["In-Reply-To"] == original_ids[call.recipients[0]]
    assert sorted(r for call in mailgun.calls for r in call.recipients) == [
        "ann@example.com", "bob@example.com", "cat@example.com"]
    assert follow_up.url == sent_original.url  # the article, unless the editor gave another


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Alert.Status.DRAFT, Alert.Status.SCHEDULED, Alert.Status.SENDING])
def test_an_alert_not_yet_sent_cannot_be_followed_up(alert, status):
    Alert.objects.filter(pk=alert.pk).update(status=status)
    alert.refresh_from_db()
    with pytest.raises(FollowUpRefused, match="has been sent"):
        send_follow_up(alert, kind="correction", headline="x")
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_a_follow_up_is_not_itself_followed_up_and_a_kind_must_be_known(sent_original):
    follow_up = send_follow_up(sent_original, kind="correction", headline="x")
    Alert.objects.filter(pk=follow_up.pk).update(status=Alert.Status.SENT)
    follow_up.refresh_from_db()
    with pytest.raises(FollowUpRefused, match="original alert"):
        send_follow_up(follow_up, kind="correction", headline="y")
    with pytest.raises(ValueError):
        send_follow_up(sent_original, kind="normal", headline="y")


@pytest.mark.django_db
def test_once_the_ledger_is_purged_a_follow_up_is_refused_naming_the_retention(sent_original, settings):
    Batch.objects.filter(alert=sent_original).update(purged_at=timezone.now())
    with pytest.raises(FollowUpRefused, match=f"kept for {settings.DELIVERY_RETENTION_DAYS} days"):
        send_follow_up(sent_original, kind="correction", headline="x")


@pytest.mark.django_db
def test_readers_whose_copy_bounced_are_not_sent_the_follow_up(sent_original):
    ann = Subscriber.objects.get(email="ann@example.com")
    Delivery.objects.filter(alert=sent_original, subscriber=ann).update(status=Delivery.Status.BOUNCED)
    assert corrections.follow_up_audience_count(sent_original) == 2


# --- The admin ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_offers_corrections_on_a_sent_alert_only_to_publishers(client, editor, sent_original):
    page = client.get(f"/admin/alerts/alert/{sent_original.pk}/change/").content.decode()
    assert "Send a correction" not in page
    assert client.get(f"/admin/alerts/alert/{sent_original.pk}/follow-up/correction/").status_code == 403
    assert client.post(f"/admin/alerts/alert/{sent_original.pk}/follow-up/correction/",
                       {"headline": "x"}).status_code == 403
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_a_publisher_sends_a_correction_from_the_admin(client, publisher, sent_original, mailgun):
    page = client.get(f"/admin/alerts/alert/{sent_original.pk}/change/").content.decode()
    assert "Send a correction" in page and "Send an update" in page
    form = client.get(f"/admin/alerts/alert/{sent_original.pk}/follow-up/correction/").content.decode()
    assert "to the <strong>3</strong> readers who received the alert" in form
    assert sent_original.headline.replace("<", "&lt;").replace(">", "&gt;") in form  # prefilled, escaped
    response = client.post(f"/admin/alerts/alert/{sent_original.pk}/follow-up/correction/", {
        "headline": "Only one missile", "standfirst": "Not two", "body": "", "url": ""})
    follow_up = Alert.objects.get(follow_up_of=sent_original)
    assert response.status_code == 302 and response["Location"].endswith(f"/{follow_up.pk}/progress/")
    assert follow_up.kind == "correction" and follow_up.author == publisher
    assert follow_up.status == Alert.Status.SENDING and follow_up.published_by == publisher
    page = client.get(f"/admin/alerts/alert/{sent_original.pk}/change/").content.decode()
    assert "Correction: Only one missile" in page  # listed on the original


@pytest.mark.django_db
def test_an_unknown_kind_or_an_empty_headline_is_a_clear_4xx(client, publisher, sent_original):
    assert client.get(f"/admin/alerts/alert/{sent_original.pk}/follow-up/retraction/").status_code == 404
    response = client.post(f"/admin/alerts/alert/{sent_original.pk}/follow-up/update/", {"headline": ""})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_the_cut_of_a_follow_up_walks_the_original_ledger_in_windows_and_misses_nobody(alert, monkeypatch):
    from alerts.publishing import audience

    monkeypatch.setattr(audience, "FOLLOW_UP_STEP", 7)
    readers = seed_readers(60)
    batch = Batch.objects.create(alert=alert, first_subscriber_id=readers[0].pk, last_subscriber_id=readers[-1].pk)
    got = [r for i, r in enumerate(readers) if i % 3]  # every third reader never had it
    Delivery.objects.bulk_create([Delivery(alert=alert, subscriber=r, batch=batch, status="sent") for r in got])
    Delivery.objects.create(alert=alert, subscriber=readers[0], batch=batch, status="bounced")
    gone = got[5]
    Suppression.objects.create(email_hmac=gone.email_hmac, reason="complained")
    expected = [r.pk for r in got if r != gone]
    ranges = list(audience.follow_up_ranges(alert.pk, 0, 4))
    assert [(first, last, count) for first, last, count in ranges] == [
        (chunk[0], chunk[-1], len(chunk)) for chunk in (expected[i:i + 4] for i in range(0, len(expected), 4))]
    assert list(audience.follow_up_ranges(alert.pk, expected[7], 4))[0][0] == expected[8]  # a resumed cut
