"""The editor's actions on an alert: publish, schedule, stop, test; and its progress."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from .emails import alert_message
from .models import Alert, Batch, DigestRun
from .queueing import enqueue, enqueue_on_commit
from .tokens import link_tokens

logger = logging.getLogger(__name__)


def requeue_after() -> timedelta:
    """A batch still PENDING this long after it was cut was probably never queued (broker
    down at the time) or was reserved by a worker that died; queueing it again is
    harmless because sending claims it first."""
    return timedelta(seconds=settings.SWEEP_REQUEUE_AFTER_SECONDS)


def alert_publish(*, alert_id: int, user=None) -> bool:
    """Start sending now. Returns False if the alert was already published (a double
    click, two editors at once, a retried request): it is published once."""
    from .tasks import fan_out_alert

    with transaction.atomic():
        started = Alert.objects.filter(
            pk=alert_id, status__in=[Alert.Status.DRAFT, Alert.Status.SCHEDULED]
        ).update(status=Alert.Status.SENDING, published_at=timezone.now(), published_by=user)
        if started:
            enqueue_on_commit(fan_out_alert, alert_id=alert_id)
    if started:
        logger.info("Alert %s published", alert_id)
    return bool(started)


def alert_schedule(*, alert_id: int, when: datetime, user=None) -> bool:
    """Publish at an embargo time (picked up by the sweeper within seconds of it)."""
    return bool(Alert.objects.filter(
        pk=alert_id, status__in=[Alert.Status.DRAFT, Alert.Status.SCHEDULED]
    ).update(status=Alert.Status.SCHEDULED, scheduled_for=when, published_by=user))


def alert_unschedule(*, alert_id: int) -> bool:
    return bool(Alert.objects.filter(pk=alert_id, status=Alert.Status.SCHEDULED)
                .update(status=Alert.Status.DRAFT, scheduled_for=None))


def alert_stop(*, alert_id: int) -> bool:
    """Stop sending: batches not yet claimed are cancelled; the few in flight finish."""
    with transaction.atomic():
        stopped = Alert.objects.filter(
            pk=alert_id, status__in=[Alert.Status.SENDING, Alert.Status.SCHEDULED]
        ).update(status=Alert.Status.CANCELLED, cancelled_at=timezone.now())
        Batch.objects.filter(alert_id=alert_id, status=Batch.Status.PENDING).update(
            status=Batch.Status.CANCELLED)
    return bool(stopped)


def alert_send_test(*, alert_id: int, to: str) -> None:
    """Send the editor one copy exactly as subscribers get it. Its links carry a token
    for no subscriber (id 0), so pressing them changes nobody's subscription."""
    alert = Alert.objects.get(pk=alert_id)
    message = alert_message(alert, to=to, token=link_tokens.make_token(0))
    message.subject = f"[TEST] {message.subject}"
    message.send()


@dataclass(frozen=True)
class Progress:
    status: str
    audience: int
    sent: int
    failed: int
    skipped: int
    remaining: int
    batches: int
    batches_open: int
    batches_failed: int
    rate_per_s: float
    eta_s: float | None
    first_handoff_s: float | None
    last_handoff_s: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def alert_progress(alert: Alert) -> Progress:
    """Live numbers for the editor, from one aggregate over the alert's batches."""
    totals = Batch.objects.filter(alert=alert).aggregate(
        planned=Sum("planned_count"), sent=Sum("sent_count"), failed=Sum("failed_count"),
        skipped=Sum("skipped_count"), batches=Count("pk"),
        open=Count("pk", filter=Q(status__in=[Batch.Status.PENDING, Batch.Status.SENDING])),
        open_planned=Sum("planned_count", filter=Q(status__in=[Batch.Status.PENDING, Batch.Status.SENDING])),
        dead=Count("pk", filter=Q(status=Batch.Status.FAILED)),
    )
    sent, failed = totals["sent"] or 0, totals["failed"] or 0
    remaining = totals["open_planned"] or 0
    elapsed = _seconds(alert.published_at, timezone.now()) if alert.published_at else None
    rate = sent / elapsed if elapsed and sent else 0.0
    return Progress(
        status=alert.status, audience=alert.audience_size or (totals["planned"] or 0),
        sent=sent, failed=failed, skipped=totals["skipped"] or 0, remaining=remaining,
        batches=totals["batches"], batches_open=totals["open"], batches_failed=totals["dead"],
        rate_per_s=round(rate, 1), eta_s=round(remaining / rate, 1) if rate and remaining else None,
        first_handoff_s=_seconds(alert.published_at, alert.first_handoff_at),
        last_handoff_s=_seconds(alert.published_at, alert.last_handoff_at),
    )


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Publish due scheduled alerts; re-queue lost fan-outs and batches (of alerts and
    digests); finish alerts and digest runs whose last step was lost. Every action here
    is safe to repeat."""
    from . import fanout
    from .digests import digest_run_finish_if_done
    from .tasks import fan_out_alert, send_batch, send_digest_batch

    now = now or timezone.now()
    due = list(Alert.objects.filter(status=Alert.Status.SCHEDULED, scheduled_for__lte=now)
               .values_list("pk", "published_by_id"))
    published = sum(alert_publish(alert_id=pk, user=None if by is None else _user(by)) for pk, by in due)
    uncut = list(Alert.objects.filter(status=Alert.Status.SENDING, fanned_out_at__isnull=True,
                                      published_at__lt=now - requeue_after()).values_list("pk", flat=True))
    for alert_id in uncut:
        enqueue(fan_out_alert, alert_id=alert_id)
    stuck = list(Batch.objects.filter(
        Q(status=Batch.Status.PENDING, created_at__lt=now - requeue_after())
        | Q(status=Batch.Status.SENDING, lease_expires_at__lt=now),
    ).filter(Q(alert__status=Alert.Status.SENDING) | Q(digest_run__status=DigestRun.Status.SENDING))
        .values_list("pk", "digest_run_id")[:10000])
    for batch_id, digest_run_id in stuck:
        enqueue(send_digest_batch if digest_run_id else send_batch, batch_id=batch_id)
    sending = Alert.objects.filter(status=Alert.Status.SENDING, fanned_out_at__isnull=False)
    finished = sum(fanout.alert_finish_if_done(alert_id=pk) for pk in sending.values_list("pk", flat=True))
    runs = DigestRun.objects.filter(status=DigestRun.Status.SENDING, fanned_out_at__isnull=False)
    finished += sum(digest_run_finish_if_done(run_id=pk) for pk in runs.values_list("pk", flat=True))
    if published or uncut or stuck or finished:
        logger.info("Sweep: published %d, re-queued %d fan-outs and %d batches, finished %d",
                    published, len(uncut), len(stuck), finished)
    return {"published": published, "fan_outs": len(uncut), "batches": len(stuck), "finished": finished}


def _user(user_id: int):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=user_id).first()
