"""Thin Celery entry points: each unpacks ids and calls one function."""

from __future__ import annotations

import logging

from celery import shared_task

from . import digests, fanout, mailing, publishing

logger = logging.getLogger(__name__)


@shared_task(name="alerts.send_confirmation", acks_late=True)
def send_confirmation(subscriber_id: int) -> None:
    """Send the double opt-in email. Running twice is harmless: the per-address
    cooldown lets only the first through."""
    mailing.confirmation_send(subscriber_id=subscriber_id)


@shared_task(name="alerts.fan_out_alert", acks_late=True)
def fan_out_alert(alert_id: int) -> None:
    """Cut an alert into batches and queue them. Running twice, or again after dying
    half-way, resumes where the batches end; the sweeper re-queues it if it was lost."""
    fanout.alert_fan_out(alert_id=alert_id)


@shared_task(name="alerts.send_batch", bind=True, acks_late=True, max_retries=None)
def send_batch(self, batch_id: int) -> None:
    """Send one batch in one provider call. Safe to re-run: a claimed or sent batch is
    not sent again. Retries are bounded by the batch's attempt counter in the database."""
    try:
        fanout.batch_send(batch_id=batch_id)
    except fanout.RetryLater as later:
        raise self.retry(countdown=later.countdown) from later


@shared_task(name="alerts.sweep_sends", acks_late=True)
def sweep_sends() -> None:
    """Publish due scheduled alerts and re-queue sends that were committed but never
    queued or whose worker died. Idempotent; run every few seconds by beat."""
    publishing.sweep()


@shared_task(name="alerts.send_digests", acks_late=True)
def send_digests() -> None:
    """One digest tick: start the runs due now. Safe to run twice or from two beats:
    each subscriber is reserved once per period in the database."""
    digests.digest_tick()


@shared_task(name="alerts.send_digest_batch", bind=True, acks_late=True, max_retries=None)
def send_digest_batch(self, batch_id: int) -> None:
    """Send one batch of digests. Safe to re-run: only still-reserved rows are sent."""
    try:
        digests.digest_batch_send(batch_id=batch_id)
    except fanout.RetryLater as later:
        raise self.retry(countdown=later.countdown) from later


from .subscriber_tasks import *  # noqa: E402,F401,F403  (register housekeeping tasks)
