"""What an alert's outgoing webhooks say: published, sent (with its totals), failed,
cancelled. Built only when an endpoint wants the event."""

from __future__ import annotations

from django.db.models import Sum

from ..common.outbox import Event, webhook_emit
from ..models import Alert, Batch

FINISHED = {Alert.Status.SENT: Event.ALERT_SENT, Alert.Status.FAILED: Event.ALERT_FAILED}


def alert_emit(event_type: str, alert_id: int) -> int:
    """Record `event_type` for this alert in the outbox (see common/outbox.py)."""
    return webhook_emit(event_type, lambda: _alert_data(alert_id, totals=event_type in FINISHED.values()))


def alert_finished_emit(alert_id: int) -> int:
    """alert.sent or alert.failed, whichever the alert just became."""
    status = Alert.objects.values_list("status", flat=True).get(pk=alert_id)
    return alert_emit(FINISHED[status], alert_id) if status in FINISHED else 0


def _alert_data(alert_id: int, *, totals: bool) -> dict:
    alert = Alert.objects.prefetch_related("topics").get(pk=alert_id)
    data = {"alert": {
        "id": alert.pk, "headline": alert.headline, "url": alert.url, "status": alert.status,
        "topics": [topic.slug for topic in alert.topics.all()], "scheduled_for": alert.scheduled_for,
        "published_at": alert.published_at, "finished_at": alert.finished_at, "cancelled_at": alert.cancelled_at,
    }}
    if totals:
        sums = Batch.objects.filter(alert_id=alert_id).aggregate(
            sent=Sum("sent_count"), failed=Sum("failed_count"), skipped=Sum("skipped_count"))
        data["totals"] = {"audience": alert.audience_size, **{k: v or 0 for k, v in sums.items()}}
    return data
