"""The recovery tick, run by beat every few seconds: publish scheduled alerts that are
due, re-queue fan-outs and batches that were committed but never queued (broker down)
or whose worker died, and finish alerts and digest runs whose last step was lost.

It needs every sender, so it sits above them all, beside the tasks.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Max, Q

from .common.queueing import enqueue
from .digests.schedule import digest_run_finish_if_done
from .models import Alert, Batch, DigestRun
from .outbox.services import SEND_TASK, outbox_waiting
from .publishing.fanout import alert_finish_if_done
from .publishing.services import alert_publish
from .sending import ledger
from .signup.services import DRAIN_TASK, consent_requests_waiting

logger = logging.getLogger(__name__)


def requeue_after() -> timedelta:
    """A batch still PENDING this long after it was cut was probably never queued (broker
    down at the time) or was reserved by a worker that died; queueing it again is
    harmless because sending claims it first."""
    return timedelta(seconds=settings.SWEEP_REQUEUE_AFTER_SECONDS)


SENDING_OWNER = Q(alert__status=Alert.Status.SENDING) | Q(digest_run__status=DigestRun.Status.SENDING)
SWEEP_LOCK = 7_351_002  # a PostgreSQL advisory lock key: one sweep at a time, however many beats


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Publish due scheduled alerts; re-queue lost fan-outs and batches (of alerts and
    digests), each no sooner than its next attempt is due; probe a provider that has
    been failing; finish alerts and digest runs whose last step was lost. Every action
    here is safe to repeat. `now` defaults to the database's clock (tests pass one).

    Returns what it did; {"skipped": 1} if another sweep holds the lock."""
    with _one_at_a_time() as alone:
        if not alone:
            return {"skipped": 1}
        return _sweep(now or ledger.database_now())


@contextmanager
def _one_at_a_time():
    """A session advisory lock, so that two beats (or a backlog of sweep messages) never
    run sweeps side by side; it is released with the connection if the worker dies."""
    if not ledger.on_postgresql():
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SWEEP_LOCK])
        alone = cursor.fetchone()[0]
    try:
        yield alone
    finally:
        if alone:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK])


def _sweep(now: datetime) -> dict[str, int]:
    due = list(Alert.objects.filter(status=Alert.Status.SCHEDULED, scheduled_for__lte=now)
               .values_list("pk", "published_by_id"))
    published = sum(alert_publish(alert_id=pk, user=None if by is None else _user(by)) for pk, by in due)
    # A cut is re-queued only once its walker's lease has run out (or it never started).
    uncut = list(Alert.objects.filter(
        Q(cut_lease_expires_at__isnull=True) | Q(cut_lease_expires_at__lt=now),
        status=Alert.Status.SENDING, fanned_out_at__isnull=True, published_at__lt=now - requeue_after(),
    ).values_list("pk", flat=True))
    for alert_id in uncut:
        enqueue("alerts.fan_out_alert", alert_id=alert_id)
    stuck = _stuck_batches(now)
    for batch_id, digest_run_id in stuck:
        enqueue("alerts.send_digest_batch" if digest_run_id else "alerts.send_batch", batch_id=batch_id)
    probes = _probe_waiting_providers(now)
    # Signups and outbox emails committed while Redis was down (their nudge failed), or
    # whose drain died: one drain each finds them all. Sooner than batches, because a
    # reader is waiting for the email, and a spare drain costs one empty query.
    drains = _queue_drains(now - timedelta(seconds=DRAIN_SWEEP_AFTER_SECONDS))
    sending = Alert.objects.filter(status=Alert.Status.SENDING, fanned_out_at__isnull=False)
    finished = sum(alert_finish_if_done(alert_id=pk) for pk in sending.values_list("pk", flat=True))
    runs = DigestRun.objects.filter(status=DigestRun.Status.SENDING, fanned_out_at__isnull=False)
    finished += sum(digest_run_finish_if_done(run_id=pk) for pk in runs.values_list("pk", flat=True))
    if published or uncut or stuck or probes or finished or drains:
        logger.info("Sweep: published %d, re-queued %d fan-outs and %d batches, %d probes, finished %d, "
                    "%d drains", published, len(uncut), len(stuck), probes, finished, drains)
    return {"published": published, "fan_outs": len(uncut), "batches": len(stuck), "probes": probes,
            "finished": finished, "drains": drains}


DRAIN_SWEEP_AFTER_SECONDS = 2


def _queue_drains(before: datetime) -> int:
    queued = 0
    if consent_requests_waiting(before=before):
        queued += enqueue(DRAIN_TASK)
    if outbox_waiting(before=before):
        queued += enqueue(SEND_TASK)
    return queued


def _stuck_batches(now: datetime) -> list[tuple[int, int | None]]:
    """Batches whose message was probably lost: pending well past the moment they were
    due (cut, or their next attempt), or held under a lease that has run out (the
    holder died and Celery did not redeliver its task). A batch waiting out its
    backoff is left alone, so a failing provider is not hammered."""
    late = now - requeue_after()
    lost = (Q(status=Batch.Status.PENDING, next_attempt_at__isnull=True, created_at__lt=late)
            | Q(status=Batch.Status.PENDING, next_attempt_at__lt=late)
            | Q(status=Batch.Status.SENDING, lease_expires_at__lt=now))
    return list(Batch.objects.filter(lost).filter(SENDING_OWNER).values_list("pk", "digest_run_id")[:10000])


def _probe_waiting_providers(now: datetime) -> int:
    """While a provider fails, every batch backs off (up to RETRY_MAX_DELAY_SECONDS);
    so that its return is noticed within seconds, one waiting batch of each alert or
    digest run is made due every PROVIDER_PROBE_SECONDS, unless one of them is being
    tried. The first probe that gets through wakes the rest (sending.batches.wake_waiting)."""
    quiet = now - timedelta(seconds=settings.PROVIDER_PROBE_SECONDS)
    waiting = Batch.objects.filter(SENDING_OWNER, status=Batch.Status.PENDING, next_attempt_at__gt=now,
                                   waiting_since__isnull=False)
    probes = 0
    for owner in waiting.values("alert_id", "digest_run_id").annotate(last_try=Max("claimed_at")):
        fields = {"alert_id": owner["alert_id"]} if owner["alert_id"] else {"digest_run_id": owner["digest_run_id"]}
        in_flight = Batch.objects.filter(**fields, status=Batch.Status.SENDING).exists()
        if in_flight or (owner["last_try"] and owner["last_try"] > quiet):
            continue
        # The batch tried least recently, so that probes take turns: no batch is
        # called more often than its own backoff would, give or take a probe.
        probe = waiting.filter(**fields).order_by("claimed_at", "pk").values_list("pk", flat=True).first()
        if probe and Batch.objects.filter(pk=probe, status=Batch.Status.PENDING).update(next_attempt_at=now):
            enqueue("alerts.send_digest_batch" if owner["digest_run_id"] else "alerts.send_batch", batch_id=probe)
            probes += 1
    return probes


def _user(user_id: int):
    return get_user_model().objects.filter(pk=user_id).first()
