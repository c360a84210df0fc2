"""Provider events: the delivery ledger, bounces, complaints, the suppression list,
Mailgun's signed webhook, and the per-alert engagement figures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.utils import timezone

import alerts.subscribers.admin  # noqa: F401  (registers SuppressionAdmin)
from alerts import checks
from alerts.models import ConsentEvent, Delivery, Subscriber, Suppression, TrackingEvent
from alerts.publishing.progress import alert_engagement
from tests.factories import make_batch_deliveries, make_delivery, make_subscriber

pytestmark = pytest.mark.django_db

WEBHOOK = "/anymail/mailgun/tracking/"
SIGNING_KEY = "mailgun-signing-key"
BASIC_AUTH = "hooks:s3cret"
MESSAGE_ID = "<20260101.abc@mg.news.example.com>"


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": BASIC_AUTH,
                        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}


@pytest.fixture
def alice() -> Subscriber:
    return make_subscriber(marketing_consent=True)


def send_event(event_type: str = "bounced", recipient: str = "alice@example.com", *,
               event_id: str | None = None, message_id: str | None = MESSAGE_ID,
               esp_name: str = "Mailgun", **fields) -> None:
    event = AnymailTrackingEvent(
        event_type=event_type, recipient=recipient, message_id=message_id,
        event_id=secrets.token_hex(8) if event_id is None else (event_id or None),
        timestamp=fields.pop("timestamp", timezone.now()),
        **fields,
    )
    tracking.send(sender=object, event=event, esp_name=esp_name)


def active_suppression(subscriber: Subscriber) -> Suppression | None:
    return Suppression.objects.filter(email_hmac=subscriber.email_hmac, lifted_at__isnull=True).first()


# --- Through anymail's tracking signal ----------------------------------------------


def test_a_hard_bounce_suppresses_the_address_at_once(alice):
    delivery = make_delivery(alice, message_id=MESSAGE_ID)
    send_event("bounced", event_id="ev-1", reject_reason="bounced",
               description="550 5.1.1 <alice@example.com>: mailbox unknown")
    suppression = active_suppression(alice)
    assert suppression.reason == Suppression.Reason.HARD_BOUNCE
    assert suppression.event_id == "mailgun:ev-1"
    assert "alice@example.com" not in suppression.detail  # addresses never copied into text
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.BOUNCED
    assert delivery.updated_at is not None


def test_a_complaint_suppresses_and_unsubscribes_from_alerts_only(alice):
    send_event("complained")
    assert active_suppression(alice).reason == Suppression.Reason.COMPLAINT
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED
    assert alice.marketing_consent is True
    event = alice.consent_events.get()
    assert (event.purpose, event.action, event.source) == ("alerts", "withdrawn", "provider")


def test_soft_bounces_suppress_only_past_the_limit(alice, settings):
    settings.SOFT_BOUNCE_LIMIT = 3
    send_event("deferred", message_id="<a@x>")
    send_event("deferred", message_id="<a@x>")  # the provider retrying one message counts once
    send_event("deferred", message_id="<b@x>")
    assert active_suppression(alice) is None
    send_event("deferred", message_id="<c@x>")
    assert active_suppression(alice).reason == Suppression.Reason.SOFT_BOUNCES


def test_postmarks_soft_bounce_counts_as_soft_not_hard(alice, settings):
    settings.SOFT_BOUNCE_LIMIT = 2
    send_event("bounced", reject_reason="bounced", esp_event={"Type": "SoftBounce"}, message_id="<a@x>")
    assert active_suppression(alice) is None


def test_a_successful_delivery_resets_the_soft_bounce_count(alice, settings):
    settings.SOFT_BOUNCE_LIMIT = 2
    send_event("deferred", message_id="<a@x>", timestamp=timezone.now() - timedelta(hours=3))
    send_event("delivered", message_id="<b@x>", timestamp=timezone.now() - timedelta(hours=2))
    send_event("deferred", message_id="<c@x>")
    assert active_suppression(alice) is None


def test_soft_bounces_outside_the_window_do_not_count(alice, settings):
    settings.SOFT_BOUNCE_LIMIT, settings.SOFT_BOUNCE_WINDOW_DAYS = 2, 30
    send_event("deferred", message_id="<a@x>", timestamp=timezone.now() - timedelta(days=31))
    send_event("deferred", message_id="<b@x>")
    assert active_suppression(alice) is None


def test_a_replayed_event_applies_once(alice, settings):
    settings.SOFT_BOUNCE_LIMIT = 2
    send_event("deferred", event_id="same", message_id="<a@x>")
    send_event("deferred", event_id="same", message_id="<b@x>")  # a replay (even if altered)
    assert TrackingEvent.objects.count() == 1
    assert active_suppression(alice) is None


def test_a_replayed_event_without_a_provider_id_still_applies_once(alice):
    when = timezone.now()
    for _ in range(2):
        send_event("deferred", event_id="", message_id="<a@x>", timestamp=when)
    assert TrackingEvent.objects.count() == 1


def test_the_ledger_follows_engagement_and_ignores_events_out_of_order(alice):
    delivery = make_delivery(alice, message_id=MESSAGE_ID)
    send_event("opened")
    send_event("delivered")  # arrives late: must not move the delivery backwards
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.OPENED
    send_event("clicked", message_id=MESSAGE_ID.strip("<>"))  # provider without brackets
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.CLICKED


def test_only_the_recipients_own_delivery_changes_in_a_batch(alice):
    bob = make_subscriber("bob@example.com")
    # A batch send gives every recipient the same message id.
    mine, his = make_delivery(alice, message_id=MESSAGE_ID), make_delivery(bob, message_id=MESSAGE_ID)
    send_event("bounced", recipient="bob@example.com")
    mine.refresh_from_db()
    his.refresh_from_db()
    assert (mine.status, his.status) == ("sent", "bounced")


def test_events_find_rows_of_a_batch_sent_as_one_call_by_the_batchs_message_id(alice):
    bob = make_subscriber("bob@example.com")
    mine, his = make_batch_deliveries([alice, bob], message_id=MESSAGE_ID)
    send_event("delivered", recipient="bob@example.com", message_id=MESSAGE_ID.strip("<>"))
    send_event("opened", recipient="bob@example.com")
    mine.refresh_from_db()
    his.refresh_from_db()
    assert (mine.status, his.status) == ("sent", "opened")
    assert his.provider_message_id == MESSAGE_ID
    assert alert_engagement(his.alert)["opened"] == 1


def test_an_unsubscribe_through_the_provider_is_recorded(alice):
    send_event("unsubscribed")
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED
    assert alice.consent_events.get().source == ConsentEvent.Source.PROVIDER
    assert active_suppression(alice) is None


@pytest.mark.parametrize("event", [
    {"recipient": "stranger@example.com"}, {"recipient": None}, {"recipient": "no-at-sign"},
    {"recipient": "x" * 400 + "@example.com"}, {"event_type": "queued"}, {"event_type": "unknown"},
    {"event_type": "made-up"}, {"esp_name": "SendGrid"},
])
def test_events_it_cannot_match_are_ignored_without_raising(alice, event):
    fields = {"event_type": "bounced", **event}
    send_event(fields.pop("event_type"), **fields)
    assert active_suppression(alice) is None
    assert not TrackingEvent.objects.exists()


@pytest.mark.parametrize("event", [
    {"message_id": None, "event_id": ""}, {"timestamp": "yesterday"}, {"description": 12345},
])
def test_odd_but_matchable_events_still_apply(alice, event):
    send_event("bounced", **event)
    assert active_suppression(alice).reason == Suppression.Reason.HARD_BOUNCE


def test_events_are_ignored_when_webhooks_are_not_secured_in_production(alice, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": []}
    send_event("complained")
    assert active_suppression(alice) is None


# --- Over HTTP, as Mailgun sends it ---------------------------------------------------


def mailgun_body(event_data: dict, *, key: str = SIGNING_KEY) -> str:
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                       "event-data": event_data})


def hard_bounce_data(recipient: str = "alice@example.com") -> dict:
    return {
        "event": "failed", "severity": "permanent", "reason": "bounce", "recipient": recipient,
        "timestamp": time.time(), "id": secrets.token_hex(8),
        "message": {"headers": {"message-id": MESSAGE_ID.strip("<>")}},
        "delivery-status": {"code": 550, "message": f"5.1.1 <{recipient}> unknown",
                            "description": "Not delivering to previously bounced address"},
    }


def post_webhook(client, body: str, auth: str | None = BASIC_AUTH):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post(WEBHOOK, data=body, content_type="application/json", **headers)


def test_a_signed_mailgun_bounce_webhook_suppresses_the_address(client, alice):
    delivery = make_delivery(alice, message_id=MESSAGE_ID)
    response = post_webhook(client, mailgun_body(hard_bounce_data()))
    assert response.status_code == 200
    assert active_suppression(alice).reason == Suppression.Reason.HARD_BOUNCE
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.BOUNCED


def test_a_replayed_mailgun_webhook_is_refused_and_applies_once(client, alice):
    body = mailgun_body({**hard_bounce_data(), "event": "failed", "severity": "temporary"})
    assert [post_webhook(client, body).status_code for _ in range(2)] == [200, 400]
    assert TrackingEvent.objects.count() == 1


@pytest.mark.parametrize("case", ["wrong signature", "no basic auth", "wrong basic auth", "not json"])
def test_a_webhook_without_valid_authentication_is_refused(client, alice, case):
    body = mailgun_body(hard_bounce_data(), key="wrong" if case == "wrong signature" else SIGNING_KEY)
    auth = {"no basic auth": None, "wrong basic auth": "hooks:guess"}.get(case, BASIC_AUTH)
    if case == "not json":
        body = "{not json"
    response = post_webhook(client, body, auth=auth)
    assert response.status_code == 400
    assert active_suppression(alice) is None
    assert not TrackingEvent.objects.exists()


def test_without_a_webhook_secret_the_app_refuses_to_start_in_production(settings):
    settings.DEBUG = False
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": [], "MAILGUN_WEBHOOK_SIGNING_KEY": ""}
    ids = [error.id for error in checks.webhooks_are_authenticated(None)]
    assert ids == ["stoppress.E002", "stoppress.E003"]
    settings.TRACKING_WEBHOOKS_ENABLED = False
    assert checks.webhooks_are_authenticated(None) == []


def test_the_webhook_check_passes_when_secured_and_warns_deploys_in_debug(settings):
    assert checks.webhooks_are_authenticated(None) == []
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": []}
    settings.DEBUG = True
    assert checks.webhooks_are_authenticated(None) == []
    assert [e.id for e in checks.webhooks_are_authenticated_for_deploy(None)] == ["stoppress.E002"]


# --- The suppression list in the admin ------------------------------------------------


def test_staff_find_a_suppression_by_address_and_lift_it_with_a_reason(admin_client, admin_user, alice):
    suppression = Suppression.objects.create(email_hmac=alice.email_hmac, reason="bounced")
    listing = admin_client.get("/admin/alerts/suppression/", {"q": "Alice@Example.com"})
    assert f"/admin/alerts/suppression/{suppression.pk}/change/" in listing.content.decode()
    url = f"/admin/alerts/suppression/{suppression.pk}/change/"
    assert admin_client.post(url, {"lift_reason": ""}).status_code == 302
    suppression.refresh_from_db()
    assert suppression.is_active  # no reason, no lift
    admin_client.post(url, {"lift_reason": "Reader's mailbox is fixed (ticket 42)"})
    suppression.refresh_from_db()
    assert not suppression.is_active
    assert (suppression.lifted_by, suppression.lift_reason) == (admin_user, "Reader's mailbox is fixed (ticket 42)")


def test_staff_can_filter_suppressions_by_reason_and_state(admin_client, alice):
    Suppression.objects.create(email_hmac="a" * 64, reason="complained")
    Suppression.objects.create(email_hmac="b" * 64, reason="bounced", lifted_at=timezone.now())
    page = admin_client.get("/admin/alerts/suppression/", {"active": "yes", "reason": "complained"})
    assert page.status_code == 200
    assert "Spam complaint (aaaaaaaaaa" in page.content.decode()
    assert "bbbbbbbbbb" not in page.content.decode()


def test_event_times_are_stored_in_utc(alice):
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    send_event("delivered", timestamp=when)
    assert TrackingEvent.objects.get().occurred_at == when


def test_a_huge_bounce_text_is_truncated_before_it_is_scrubbed(alice):
    from alerts.tracking import _scrubbed

    junk = "x" * 20_000
    started = time.perf_counter()
    for _ in range(5):
        _scrubbed(junk)
    assert (time.perf_counter() - started) / 5 < 0.05  # was about a second each
    assert _scrubbed(f"550 <alice@example.com> {junk}").startswith("550 <<address>> xxx")
    cut = _scrubbed("y" * 470 + " alice@example.com")  # an address cut by the truncation
    assert "alice" not in cut
    send_event("bounced", description=f"550 alice@example.com {junk}")
    assert "alice@example.com" not in TrackingEvent.objects.get().description
