"""Every Celery task, each one call: it unpacks ids and calls one function.

Task names are stable (`alerts.send_batch`, ...): queued messages outlive refactors,
and the services below enqueue by name (`alerts.common.queueing.enqueue`) rather than
import this module, which sits above them all.
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError, close_old_connections

from . import sweeper
from .api import idempotency
from .common.queueing import enqueue
from .digests import schedule as digest_schedule
from .digests import send as digest_send
from .observability import deliverability
from .outbound import delivery as webhook_delivery
from .outbox.services import outbox_drain
from .publishing import fanout
from .rights import retention
from .rights.links import data_link_send
from .sending.batches import RetryLater
from .signup.drain import consent_requests_drain
from .signup.services import (
    DRAIN_GATHER_SECONDS,
    confirmation_send,
    consent_request_process,
    request_confirmation_send,
)
from .subscribers.reengagement import reengage_run
from .subscribers.services import preferences_link_send


@shared_task(name="alerts.send_confirmation", acks_late=True)
def send_confirmation(subscriber_id: int) -> None:
    """Send the double opt-in email. Running twice is harmless: the per-address
    cooldown lets only the first through."""
    confirmation_send(subscriber_id=subscriber_id)


@shared_task(name="alerts.send_preferences_link", acks_late=True)
def send_preferences_link(email_hmac: str) -> None:
    """Email a preferences link to the subscriber with this address hash, if any.
    Keyed by the hash rather than an id so the view enqueues the same task for known
    and unknown addresses. Running twice is harmless: the cooldown lets one through."""
    preferences_link_send(email_hmac=email_hmac)


@shared_task(name="alerts.fan_out_alert", bind=True, acks_late=True)
def fan_out_alert(self, alert_id: int) -> None:
    """Cut an alert into batches and queue them. One walker at a time: a second copy
    finds the cut leased and stops; a copy redelivered after its worker died takes the
    cut back at once and resumes where the batches end. The sweeper re-queues a cut
    whose lease ran out."""
    fanout.alert_fan_out(alert_id=alert_id, task_id=self.request.id or "")


@shared_task(name="alerts.send_batch", bind=True, acks_late=True, max_retries=None)
def send_batch(self, batch_id: int) -> None:
    """Send one batch in one provider call. Safe to re-run: a claimed or sent batch is
    not sent again; a copy redelivered after its worker died takes the batch back at
    once. Transient failures retry with backoff until the batch's give-up time."""
    try:
        fanout.batch_send(batch_id=batch_id, task_id=self.request.id or "")
    except RetryLater as later:
        raise self.retry(countdown=later.countdown) from later
    except DatabaseError as error:
        raise _retry_when_the_database_is_back(self, error) from error


@shared_task(name="alerts.sweep_sends", acks_late=True)
def sweep_sends() -> None:
    """Publish due scheduled alerts and re-queue sends that were committed but never
    queued or whose worker died. Idempotent, and one at a time (a second sweep while
    one runs returns at once); run every few seconds by beat on its own queue."""
    sweeper.sweep()


@shared_task(name="alerts.send_digests", acks_late=True)
def send_digests() -> None:
    """One digest tick: start the runs due now. Safe to run twice or from two beats:
    each subscriber is reserved once per period in the database."""
    digest_schedule.digest_tick()


@shared_task(name="alerts.send_digest_batch", bind=True, acks_late=True, max_retries=None)
def send_digest_batch(self, batch_id: int) -> None:
    """Send one batch of digests. Safe to re-run: only still-reserved rows are sent."""
    try:
        digest_send.digest_batch_send(batch_id=batch_id, task_id=self.request.id or "")
    except RetryLater as later:
        raise self.retry(countdown=later.countdown) from later
    except DatabaseError as error:
        raise _retry_when_the_database_is_back(self, error) from error


# A send cut off by a database restart is tried again this soon, as the same task: its
# claim names the task, so the retry takes the batch back at once, without waiting out
# the lease. About two minutes of tries; after that the sweeper's lease rule applies.
DATABASE_RETRY_SECONDS = 3
DATABASE_RETRIES = 40


def _retry_when_the_database_is_back(task, error: DatabaseError):
    close_old_connections()
    return task.retry(countdown=DATABASE_RETRY_SECONDS, max_retries=DATABASE_RETRIES, exc=error)


@shared_task(name="alerts.purge_unconfirmed")
def purge_unconfirmed() -> int:
    """Delete signups left unconfirmed past the retention period. Safe to run twice or
    to kill halfway: each chunk is deleted in its own statement."""
    return retention.purge_unconfirmed()


@shared_task(name="alerts.purge_old_deliveries")
def purge_old_deliveries() -> int:
    """Delete delivery ledger rows past DELIVERY_RETENTION_DAYS, for a bounded time;
    if old rows remain (a backlog), queue the next run at once. Safe to run twice or to
    kill halfway, like purge_unconfirmed."""
    deleted = retention.purge_old_deliveries()
    if retention.old_deliveries_remain():
        enqueue("alerts.purge_old_deliveries")
    return deleted


@shared_task(name="alerts.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    """Delete the publishing API's Idempotency-Keys past their expiry. Safe to run
    twice: an expired key is replayed to nobody."""
    return idempotency.purge_expired()


@shared_task(name="alerts.deliver_webhook", acks_late=True)
def deliver_webhook(message_id: int) -> None:
    """One attempt at one outgoing webhook. Running twice is harmless: the message is
    claimed first, so one run posts it; a failure waits for the sweep's next try."""
    webhook_delivery.webhook_deliver(message_id=message_id)


@shared_task(name="alerts.sweep_webhooks")
def sweep_webhooks() -> int:
    """Queue outgoing webhooks due a (re)try, and take back those whose worker died.
    Idempotent: a message queued twice is claimed once."""
    return webhook_delivery.webhooks_due()


@shared_task(name="alerts.purge_webhook_messages")
def purge_webhook_messages() -> int:
    """Delete old delivered and failed outgoing webhooks. Safe to run twice."""
    return webhook_delivery.purge_old_messages()


@shared_task(name="alerts.process_consent_request", acks_late=True)
def process_consent_request(request_id: int) -> None:
    """Apply a recorded signup (or other consent request) and send its confirmation.
    Running twice is harmless: the request is marked processed as it is applied, and
    the per-address cooldown holds back a second email."""
    consent_request_process(request_id=request_id)


@shared_task(name="alerts.send_request_confirmation", acks_late=True)
def send_request_confirmation(request_id: int) -> None:
    """Send a waiting request's confirmation again (from an expired link). Running
    twice is harmless: the cooldown lets one through."""
    request_confirmation_send(request_id=request_id)


@shared_task(name="alerts.send_data_link", acks_late=True)
def send_data_link(subscriber_id: int, purpose: str) -> None:
    """Email a single-use link to download ("export") or erase ("erase") one's data.
    Running twice is harmless: the cooldown lets one through."""
    data_link_send(subscriber_id=subscriber_id, purpose=purpose)


# --- Observability ---------------------------------------------------------------------


@shared_task(name="alerts.check_deliverability")
def check_deliverability() -> None:
    """Recompute the last 24 hours' complaint and bounce rates, logging a WARNING while
    complaints are above DELIVERABILITY_COMPLAINT_WARN. Read-only: safe to run any time."""
    deliverability.rolling_rates(fresh=True)
@shared_task(name="alerts.reengage_readers")
def reengage_readers(after_id: int = 0) -> int:
    """Ask readers who open nothing "still want these?", keep those who answered and
    unsubscribe those who did not (REENGAGE_AFTER_MONTHS; off by default). Daily, in
    chunks for a bounded time, queueing the rest after itself. Safe to run twice:
    readers are marked asked with their email, under a lock, once per question."""
    result = reengage_run(after_id=after_id)
    if result.resume_after is not None:
        enqueue("alerts.reengage_readers", after_id=result.resume_after)
    return result.asked


@shared_task(name="alerts.drain_consent_requests", acks_late=True, bind=True)
def drain_consent_requests(self) -> None:
    """Process every unprocessed signup and consent request, in batches, recording
    their confirmation emails in the outbox. Safe to run twice or side by side: each
    batch is locked (SKIP LOCKED) and marked processed as it is applied. Run eagerly
    (CELERY_TASK_ALWAYS_EAGER), it is inside the request that queued it, where the
    gather would only hold up the answer."""
    consent_requests_drain(gather=0 if self.request.is_eager else DRAIN_GATHER_SECONDS)


@shared_task(name="alerts.send_outbox", acks_late=True)
def send_outbox() -> None:
    """Send the outbox's due emails, batched per provider call. Safe to run twice or
    side by side: rows are claimed under a lease; one that dies halfway leaves its
    rows to be taken back when the lease runs out (the sweeper re-queues this task)."""
    outbox_drain()
