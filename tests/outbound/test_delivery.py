"""Outgoing webhooks: each chosen event reaches the endpoint signed per the Standard
Webhooks spec (checked by the `standardwebhooks` verifier), events it did not choose
do not, and a receiver that is down gets the event later, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.common.consent import RequestMeta
from alerts.common.suppression import suppression_add
from alerts.models import Alert, Batch, WebhookAttempt, WebhookEndpoint, WebhookMessage
from alerts.outbound.delivery import webhook_deliver, webhook_redeliver, webhooks_due
from alerts.publishing.fanout import alert_finish_if_done
from alerts.publishing.services import alert_publish, alert_stop
from alerts.subscribers.services import subscriber_unsubscribe
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db(transaction=True)  # events are queued after the commit

E = WebhookEndpoint.Event


def time_passes() -> None:
    """Every retry and every endpoint's pause is due now."""
    past = timezone.now() - timedelta(seconds=1)
    WebhookMessage.objects.filter(status="pending").update(next_attempt_at=past)
    WebhookEndpoint.objects.update(paused_until=past)


def deliver_all() -> int:
    """What the worker does: deliver every message due now."""
    return sum(webhook_deliver(message_id=pk) for pk in
               WebhookMessage.objects.filter(status="pending").values_list("pk", flat=True))


def test_a_published_alert_reaches_the_endpoint_signed_with_its_secret(receiver, endpoint_for, alert):
    receiver.start()
    endpoint = endpoint_for(E.ALERT_PUBLISHED)
    alert_publish(alert_id=alert.pk)
    assert deliver_all() == 1
    [event] = receiver.verified(endpoint.secret)
    assert event["type"] == "alert.published"
    assert event["data"]["alert"]["id"] == alert.pk and event["data"]["alert"]["status"] == "sending"
    headers, _ = receiver.received[0]
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-id"] == WebhookMessage.objects.get().message_id
    assert WebhookMessage.objects.get().status == "delivered"


def test_another_endpoints_secret_does_not_verify(receiver, endpoint_for, alert):
    from standardwebhooks.webhooks import WebhookVerificationError

    receiver.start()
    endpoint_for(E.ALERT_PUBLISHED)
    other = endpoint_for(E.ALERT_SENT, url="http://127.0.0.1:9/never")
    alert_publish(alert_id=alert.pk)
    deliver_all()
    with pytest.raises(WebhookVerificationError):
        receiver.verified(other.secret)


def test_every_chosen_event_arrives_and_no_other(receiver, endpoint_for, world):
    receiver.start()
    endpoint = endpoint_for(E.ALERT_SENT, E.ALERT_FAILED, E.ALERT_CANCELLED, E.SUBSCRIBER_UNSUBSCRIBED,
                            E.SUBSCRIBER_SUPPRESSED)
    sent, failed, stopped = (Alert.objects.create(headline=h) for h in ("Sent", "Failed", "Stopped"))
    for alert, status in ((sent, Batch.Status.SENT), (failed, Batch.Status.FAILED)):
        Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now(),
                                                  fanned_out_at=timezone.now(), audience_size=250)
        Batch.objects.create(alert=alert, first_subscriber_id=1, last_subscriber_id=250, planned_count=250,
                             sent_count=250 if status == Batch.Status.SENT else 0,
                             failed_count=0 if status == Batch.Status.SENT else 250, status=status)
        assert alert_finish_if_done(alert_id=alert.pk)
    alert_publish(alert_id=stopped.pk)  # alert.published: not chosen
    alert_stop(alert_id=stopped.pk)
    reader = make_subscriber("reader@example.com")
    subscriber_unsubscribe(subscriber_id=reader.pk, source="web", meta=RequestMeta())
    suppression_add(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    deliver_all()
    events = {event["type"]: event["data"] for event in receiver.verified(endpoint.secret)}
    assert set(events) == {"alert.sent", "alert.failed", "alert.cancelled", "subscriber.unsubscribed",
                           "subscriber.suppressed"}
    assert events["alert.sent"]["totals"] == {"audience": 250, "sent": 250, "failed": 0, "skipped": 0}
    assert events["alert.failed"]["totals"]["failed"] == 250
    assert events["alert.cancelled"]["alert"]["id"] == stopped.pk
    assert events["subscriber.unsubscribed"]["subscriber"] == {
        "id": reader.pk, "email": "reader@example.com", "status": "unsubscribed"}
    assert events["subscriber.suppressed"] == {"email_hmac": email_hmac("bounced@example.com"), "reason": "bounced"}


def test_a_follow_up_that_finishes_is_correction_sent_not_alert_sent(receiver, endpoint_for, alert):
    receiver.start()
    endpoint = endpoint_for(E.ALERT_SENT, E.CORRECTION_SENT, E.ALERT_FAILED)
    follow_ups = [Alert.objects.create(headline=f"Fix {kind}", kind=kind, follow_up_of=alert)
                  for kind in (Alert.Kind.CORRECTION, Alert.Kind.UPDATE, Alert.Kind.CORRECTION)]
    for follow_up, status in zip(follow_ups, (Batch.Status.SENT, Batch.Status.SENT, Batch.Status.FAILED), strict=True):
        Alert.objects.filter(pk=follow_up.pk).update(status=Alert.Status.SENDING, published_at=timezone.now(),
                                                      fanned_out_at=timezone.now(), audience_size=2)
        Batch.objects.create(alert=follow_up, first_subscriber_id=1, last_subscriber_id=2, planned_count=2,
                             sent_count=2 if status == Batch.Status.SENT else 0,
                             failed_count=0 if status == Batch.Status.SENT else 2, status=status)
        assert alert_finish_if_done(alert_id=follow_up.pk)
    deliver_all()
    events = sorted(((e["type"], e["data"]) for e in receiver.verified(endpoint.secret)),
                    key=lambda event: event[1]["alert"]["id"])
    assert [kind for kind, _ in events] == ["correction.sent", "correction.sent", "alert.failed"]
    for (_, data), follow_up in zip(events, follow_ups, strict=True):
        assert data["alert"]["id"] == follow_up.pk and data["alert"]["follow_up_of"] == alert.pk
        assert data["alert"]["kind"] == follow_up.kind
    assert events[0][1]["totals"] == {"audience": 2, "sent": 2, "failed": 0, "skipped": 0}
    assert events[2][1]["totals"]["failed"] == 2  # a follow-up that failed is alert.failed, marked as one


def test_without_an_endpoint_an_event_costs_one_query_and_records_nothing(alert, django_assert_num_queries):
    from alerts.common.outbox import webhook_emit

    with django_assert_num_queries(1):
        assert webhook_emit("alert.published", lambda: pytest.fail("built for nobody")) == 0
    assert not WebhookMessage.objects.exists()


def test_a_disabled_endpoint_gets_nothing(receiver, endpoint_for, alert):
    endpoint = endpoint_for(E.ALERT_PUBLISHED)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    alert_publish(alert_id=alert.pk)
    assert not WebhookMessage.objects.exists()


def test_a_receiver_that_is_down_gets_the_event_later_once(receiver, endpoint_for, alert, settings):
    settings.WEBHOOK_RETRY_SECONDS = 1
    endpoint = endpoint_for(E.ALERT_PUBLISHED)
    alert_publish(alert_id=alert.pk)  # nothing listens on the receiver's port yet
    assert deliver_all() == 0
    message = WebhookMessage.objects.get()
    assert message.status == "pending" and message.attempts == 1
    assert "ConnectionError" in message.last_error
    assert message.next_attempt_at > timezone.now()
    assert webhooks_due() == 0  # not yet due: nothing queued

    receiver.start()
    receiver.status = 503  # up, but failing
    time_passes()
    assert deliver_all() == 0
    message.refresh_from_db()
    assert message.attempts == 2 and message.last_status_code == 503
    assert message.next_attempt_at - timezone.now() > timedelta(seconds=1)  # the backoff doubled
    assert WebhookEndpoint.objects.get().consecutive_failures == 2

    receiver.status = 200
    time_passes()
    assert deliver_all() == 1
    assert WebhookEndpoint.objects.get().paused_until is None
    assert deliver_all() == 0 and webhooks_due() == 0
    ok = [headers for headers, _ in receiver.received if receiver.verified(endpoint.secret)]
    assert len({headers["webhook-id"] for headers in ok}) == 1  # the same message each time
    message.refresh_from_db()
    assert message.status == "delivered" and message.attempts == 3
    tries = list(message.tries.all())
    assert [t.status_code for t in tries] == [None, 503, 200]
    assert "ConnectionError" in tries[0].error


def test_it_gives_up_after_the_last_attempt(receiver, endpoint_for, alert, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    endpoint_for(E.ALERT_PUBLISHED)
    alert_publish(alert_id=alert.pk)
    for _ in range(3):
        time_passes()
        deliver_all()
    message = WebhookMessage.objects.get()
    assert message.status == "failed" and message.attempts == 2


def test_a_claim_whose_worker_died_is_taken_back_by_the_sweep(receiver, endpoint_for, alert):
    endpoint_for(E.ALERT_PUBLISHED)
    alert_publish(alert_id=alert.pk)
    WebhookMessage.objects.update(status="sending", lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert webhooks_due() == 1
    assert WebhookMessage.objects.get().status == "pending"


def test_staff_can_redeliver_a_delivered_message(receiver, endpoint_for, alert):
    receiver.start()
    endpoint_for(E.ALERT_PUBLISHED)
    alert_publish(alert_id=alert.pk)
    deliver_all()
    assert webhook_redeliver(message_ids=list(WebhookMessage.objects.values_list("pk", flat=True))) == 1
    deliver_all()
    assert len(receiver.received) == 2
    assert receiver.received[0][0]["webhook-id"] == receiver.received[1][0]["webhook-id"]


def test_a_reader_confirming_their_signup_is_an_event(receiver, endpoint_for, settings, mailoutbox):
    from alerts.common.tokens import confirm_tokens
    from alerts.signup.services import consent_request_confirm, consent_request_process, signup_request

    receiver.start()
    endpoint = endpoint_for(E.SUBSCRIBER_CONFIRMED)
    request_id = signup_request(email="new@example.com", marketing=False, source="web", meta=RequestMeta())
    consent_request_process(request_id=request_id)
    assert not WebhookMessage.objects.exists()  # pending is not confirmed
    consent_request_confirm(token=confirm_tokens.make_token(request_id), meta=RequestMeta())
    deliver_all()
    [event] = receiver.verified(endpoint.secret)
    assert event["type"] == "subscriber.confirmed"
    assert event["data"]["subscriber"]["email"] == "new@example.com"
    assert event["data"]["subscriber"]["status"] == "confirmed"


def test_the_admin_gives_each_endpoint_its_own_secret_and_redelivers(admin_client, receiver, alert):
    receiver.start()
    for name, url in (("CRM", receiver.url), ("Slack bridge", "http://127.0.0.1:9/down")):
        response = admin_client.post("/admin/alerts/webhookendpoint/add/", {
            "name": name, "url": url, "events": ["alert.published"], "enabled": "on"})
        assert response.status_code == 302, response.content.decode()[:2000]
    crm, slack = WebhookEndpoint.objects.order_by("name")
    assert crm.secret.startswith("whsec_") and crm.secret != slack.secret
    assert crm.events == ["alert.published"]
    assert crm.secret in admin_client.get(f"/admin/alerts/webhookendpoint/{crm.pk}/change/").content.decode()
    alert_publish(alert_id=alert.pk)
    deliver_all()
    assert [event["type"] for event in receiver.verified(crm.secret)] == ["alert.published"]
    message = WebhookMessage.objects.filter(endpoint=crm).get()
    page = admin_client.get(f"/admin/alerts/webhookmessage/{message.pk}/change/")
    assert page.status_code == 200 and message.message_id in page.content.decode()
    assert "204" in page.content.decode()  # the attempt, with what the receiver answered
    response = admin_client.post("/admin/alerts/webhookmessage/", {"action": "redeliver",
                                                                   "_selected_action": [message.pk]})
    assert response.status_code == 302
    assert WebhookMessage.objects.get(pk=message.pk).status == "pending"


def test_erasing_a_reader_scrubs_their_address_from_the_outbox(receiver, endpoint_for):
    from alerts.rights.erase import subscriber_erase

    endpoint_for(E.SUBSCRIBER_UNSUBSCRIBED)
    reader = make_subscriber("private@example.com")
    subscriber_unsubscribe(subscriber_id=reader.pk, source="web", meta=RequestMeta())
    assert "private@example.com" in WebhookMessage.objects.get().payload
    subscriber_erase(subscriber_id=reader.pk)
    assert "private@example.com" not in WebhookMessage.objects.get().payload


def test_old_delivered_and_failed_messages_are_purged_and_waiting_ones_kept(endpoint_for, alert, settings):
    from alerts.tasks import purge_webhook_messages

    endpoint_for(E.ALERT_PUBLISHED, E.ALERT_CANCELLED)
    alert_publish(alert_id=alert.pk)
    alert_stop(alert_id=alert.pk)
    old = timezone.now() - timedelta(days=settings.WEBHOOK_RETENTION_DAYS + 1)
    WebhookMessage.objects.update(created_at=old)
    WebhookMessage.objects.filter(event_type="alert.published").update(status="delivered")
    assert purge_webhook_messages() == 1
    assert list(WebhookMessage.objects.values_list("event_type", flat=True)) == ["alert.cancelled"]


def test_the_sweep_queues_a_due_message_once_not_at_every_sweep(endpoint_for, alert):
    endpoint_for(E.ALERT_PUBLISHED)
    alert_publish(alert_id=alert.pk)
    assert webhooks_due() == 0  # just queued by the emitter
    time_passes()  # that copy was lost
    assert webhooks_due() == 1
    assert webhooks_due() == 0  # queued; not again while the queue is slow
    WebhookMessage.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert webhooks_due() == 1  # a minute on, presumed lost too


def test_a_dead_endpoint_is_probed_with_one_message_and_holds_back_no_other_endpoint(receiver, endpoint_for, world):
    receiver.start()
    dead = endpoint_for(E.ALERT_PUBLISHED, url="http://127.0.0.1:9/down")
    alive = endpoint_for(E.ALERT_PUBLISHED)
    for i in range(5):
        alert_publish(alert_id=Alert.objects.create(headline=f"Story {i}").pk)
    deliver_all()
    assert WebhookMessage.objects.filter(endpoint=alive, status="delivered").count() == 5
    assert WebhookAttempt.objects.filter(message__endpoint=dead).count() == 1  # one probe, not five
    assert WebhookMessage.objects.filter(endpoint=dead, attempts=0, status="pending").count() == 4
    assert webhooks_due() == 0  # the paused endpoint's messages are not even queued

    WebhookEndpoint.objects.filter(pk=dead.pk).update(url=receiver.url)  # it is back
    time_passes()
    assert webhooks_due() == 5
    deliver_all()
    assert WebhookMessage.objects.filter(endpoint=dead, status="delivered").count() == 5
