"""What an alert's outgoing webhooks say: published, sent (with its totals), failed,
cancelled, and correction.sent for a correction or update. Built only when an endpoint
wants the event."""

from __future__ import annotations

from django.db.models import Sum

from ..common.outbox import Event, webhook_emit
from ..models import Alert, Batch

FINISHED = {Alert.Status.SENT: Event.ALERT_SENT, Alert.Status.FAILED: Event.ALERT_FAILED}


WITH_TOTALS = {*FINISHED.values(), Event.CORRECTION_SENT}


def alert_emit(event_type: str, alert_id: int) -> int:
    """Record `event_type` for this alert in the outbox (see common/outbox.py)."""
    return webhook_emit(event_type, lambda: _alert_data(alert_id, totals=event_type in WITH_TOTALS))


def alert_finished_emit(alert_id: int) -> int:
    """alert.sent or alert.failed, whichever the alert just became; a correction or
    update that was sent is correction.sent instead of alert.sent (one event for one
    send, so a receiver of alert.sent never takes a follow-up for news of its own)."""
    status, follow_up_of = Alert.objects.values_list("status", "follow_up_of_id").get(pk=alert_id)
    if status not in FINISHED:
        return 0
    if status == Alert.Status.SENT and follow_up_of is not None:
        return alert_emit(Event.CORRECTION_SENT, alert_id)
    return alert_emit(FINISHED[status], alert_id)


def _alert_data(alert_id: int, *, totals: bool) -> dict:
    alert = Alert.objects.prefetch_related("topics").get(pk=alert_id)
    data = {"alert": {
        "id": alert.pk, "headline": alert.headline, "url": alert.url, "status": alert.status,
        "kind": alert.kind, "follow_up_of": alert.follow_up_of_id,
        "topics": [topic.slug for topic in alert.topics.all()], "scheduled_for": alert.scheduled_for,
        "published_at": alert.published_at, "finished_at": alert.finished_at, "cancelled_at": alert.cancelled_at,
    }}
    if totals:
        sums = Batch.objects.filter(alert_id=alert_id).aggregate(
            sent=Sum("sent_count"), failed=Sum("failed_count"), skipped=Sum("skipped_count"))
        data["totals"] = {"audience": alert.audience_size, **{k: v or 0 for k, v in sums.items()}}
    return data
