"""The recovery tick, run by beat every few seconds: publish scheduled alerts that are
due, re-queue fan-outs and batches that were committed but never queued (broker down)
or whose worker died, and finish alerts and digest runs whose last step was lost.

It needs every sender, so it sits above them all, beside the tasks.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from .common.queueing import enqueue
from .digests.schedule import digest_run_finish_if_done
from .models import Alert, Batch, DigestRun
from .publishing.fanout import alert_finish_if_done
from .publishing.services import alert_publish

logger = logging.getLogger(__name__)


def requeue_after() -> timedelta:
    """A batch still PENDING this long after it was cut was probably never queued (broker
    down at the time) or was reserved by a worker that died; queueing it again is
    harmless because sending claims it first."""
    return timedelta(seconds=settings.SWEEP_REQUEUE_AFTER_SECONDS)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Publish due scheduled alerts; re-queue lost fan-outs and batches (of alerts and
    digests); finish alerts and digest runs whose last step was lost. Every action here
    is safe to repeat."""
    now = now or timezone.now()
    due = list(Alert.objects.filter(status=Alert.Status.SCHEDULED, scheduled_for__lte=now)
               .values_list("pk", "published_by_id"))
    published = sum(alert_publish(alert_id=pk, user=None if by is None else _user(by)) for pk, by in due)
    uncut = list(Alert.objects.filter(status=Alert.Status.SENDING, fanned_out_at__isnull=True,
                                      published_at__lt=now - requeue_after()).values_list("pk", flat=True))
    for alert_id in uncut:
        enqueue("alerts.fan_out_alert", alert_id=alert_id)
    stuck = list(Batch.objects.filter(
        Q(status=Batch.Status.PENDING, created_at__lt=now - requeue_after())
        | Q(status=Batch.Status.SENDING, lease_expires_at__lt=now),
    ).filter(Q(alert__status=Alert.Status.SENDING) | Q(digest_run__status=DigestRun.Status.SENDING))
        .values_list("pk", "digest_run_id")[:10000])
    for batch_id, digest_run_id in stuck:
        enqueue("alerts.send_digest_batch" if digest_run_id else "alerts.send_batch", batch_id=batch_id)
    sending = Alert.objects.filter(status=Alert.Status.SENDING, fanned_out_at__isnull=False)
    finished = sum(alert_finish_if_done(alert_id=pk) for pk in sending.values_list("pk", flat=True))
    runs = DigestRun.objects.filter(status=DigestRun.Status.SENDING, fanned_out_at__isnull=False)
    finished += sum(digest_run_finish_if_done(run_id=pk) for pk in runs.values_list("pk", flat=True))
    if published or uncut or stuck or finished:
        logger.info("Sweep: published %d, re-queued %d fan-outs and %d batches, finished %d",
                    published, len(uncut), len(stuck), finished)
    return {"published": published, "fan_outs": len(uncut), "batches": len(stuck), "finished": finished}


def _user(user_id: int):
    return get_user_model().objects.filter(pk=user_id).first()
