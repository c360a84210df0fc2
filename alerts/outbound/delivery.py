"""Deliver one outbox message: claim it, POST it signed per the Standard Webhooks spec
(webhook-id, webhook-timestamp, webhook-signature, made by the `standardwebhooks`
package with the endpoint's secret), and record the outcome.

A failure (no answer, a timeout, anything but 2xx) pauses the endpoint for a doubling
delay from WEBHOOK_RETRY_SECONDS up to WEBHOOK_MAX_DELAY_SECONDS: while it is paused
none of its messages is claimed, so a dead receiver costs one timeout per pause, not
one per message, and never holds up the other endpoints' messages; the first message
after the pause probes it, and a success lifts the pause for all of them. A message
is given up after WEBHOOK_MAX_ATTEMPTS. The sweep (`webhooks_due`) queues what is due,
and takes back a claim whose worker died."""

from __future__ import annotations

import base64
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

import requests
from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from ..common.queueing import enqueue
from ..models import WebhookAttempt, WebhookEndpoint, WebhookMessage

logger = logging.getLogger(__name__)

M = WebhookMessage.Status
USER_AGENT = "StopPress-Webhooks/1"
# A message the sweep queued is not queued again for this long: the queue may be slow
# behind a dead receiver's timeouts, and re-queueing every sweep would pile copies up.
# A queued task lost with the broker is queued again after it.
REQUEUE_AFTER = timedelta(seconds=60)
OPEN_ENDPOINT = Q(endpoint__paused_until__isnull=True) | Q(endpoint__paused_until__lte=Now())


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def signed_headers(*, secret: str, message_id: str, payload: str, at: datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(message_id, at, payload)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature, "Content-Type": "application/json", "User-Agent": USER_AGENT}


def webhook_deliver(*, message_id: int) -> bool:
    """One attempt at one message, now (the sweep and the emitter queue it when it is
    due). True if it was delivered now. Safe to run twice: only one run can claim a
    message, and a delivered one is never claimed again."""
    lease = timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 5)
    claimed = WebhookMessage.objects.filter(OPEN_ENDPOINT, pk=message_id, status=M.PENDING).update(
        status=M.SENDING, attempts=F("attempts") + 1, lease_expires_at=Now() + lease)
    if not claimed:
        return False
    message = WebhookMessage.objects.select_related("endpoint").get(pk=message_id)
    at = datetime.now(UTC)
    headers = signed_headers(secret=message.endpoint.secret, message_id=message.message_id,
                             payload=message.payload, at=at)
    started = time.monotonic()
    try:
        response = requests.post(message.endpoint.url, data=message.payload.encode(), headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as error:
        _log_attempt(message, started, None, f"{type(error).__name__}: {error}")
        return _failed(message, None, f"{type(error).__name__}: {error}")
    _log_attempt(message, started, response.status_code, "" if response.ok else response.text[:200])
    if 200 <= response.status_code < 300:
        WebhookMessage.objects.filter(pk=message.pk, status=M.SENDING).update(
            status=M.DELIVERED, delivered_at=Now(), last_status_code=response.status_code, last_error="",
            lease_expires_at=None)
        if WebhookEndpoint.objects.filter(pk=message.endpoint_id, consecutive_failures__gt=0).update(
                consecutive_failures=0, paused_until=None):
            # The probe got through: what waited behind the pause is due at once.
            WebhookMessage.objects.filter(endpoint_id=message.endpoint_id, status=M.PENDING).update(
                next_attempt_at=Now())
        logger.info("Webhook %s delivered to endpoint %s", message.message_id, message.endpoint_id)
        return True
    return _failed(message, response.status_code, response.text[:200])


def _log_attempt(message: WebhookMessage, started: float, status_code: int | None, error: str) -> None:
    WebhookAttempt.objects.create(message=message, status_code=status_code, error=error[:400],
                                  duration_ms=round((time.monotonic() - started) * 1000))


def _failed(message: WebhookMessage, status_code: int | None, error: str) -> bool:
    give_up = message.attempts >= settings.WEBHOOK_MAX_ATTEMPTS
    failures = message.endpoint.consecutive_failures + 1
    delay = min(settings.WEBHOOK_RETRY_SECONDS * 2 ** (failures - 1), settings.WEBHOOK_MAX_DELAY_SECONDS)
    retry_at = timezone.now() + timedelta(seconds=delay)
    WebhookEndpoint.objects.filter(pk=message.endpoint_id).update(
        consecutive_failures=F("consecutive_failures") + 1, paused_until=retry_at)
    WebhookMessage.objects.filter(pk=message.pk, status=M.SENDING).update(
        status=M.FAILED if give_up else M.PENDING, last_status_code=status_code, last_error=error[:400],
        next_attempt_at=retry_at, lease_expires_at=None)
    logger.warning("Webhook %s to endpoint %s failed (attempt %d%s): %s", message.message_id,
                   message.endpoint_id, message.attempts, ", giving up" if give_up else "", error[:200])
    return False


def webhooks_due(limit: int = 500) -> int:
    """Queue every message due an attempt (a retry whose time has come, or one whose
    first enqueue was lost), after taking back claims whose lease ran out (a worker
    killed mid-call). Returns how many were queued. Safe to run at any time."""
    WebhookMessage.objects.filter(status=M.SENDING, lease_expires_at__lt=Now()).update(
        status=M.PENDING, lease_expires_at=None, next_attempt_at=Now())
    due = list(WebhookMessage.objects.filter(OPEN_ENDPOINT, status=M.PENDING, next_attempt_at__lte=Now())
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    WebhookMessage.objects.filter(pk__in=due, status=M.PENDING).update(next_attempt_at=Now() + REQUEUE_AFTER)
    for pk in due:
        enqueue("alerts.deliver_webhook", message_id=pk)
    return len(due)


def webhook_redeliver(*, message_ids: list[int]) -> int:
    """Staff's "redeliver": send these messages again now, whatever became of them
    (the webhook-id stays, so the receiver can tell it is a repeat)."""
    count = WebhookMessage.objects.filter(pk__in=message_ids).filter(~Q(status=M.SENDING)).update(
        status=M.PENDING, next_attempt_at=Now() + REQUEUE_AFTER, attempts=0)
    WebhookEndpoint.objects.filter(messages__pk__in=message_ids).update(paused_until=None)
    for pk in message_ids:
        enqueue("alerts.deliver_webhook", message_id=pk)
    return count


def purge_old_messages() -> int:
    """Delete delivered and failed messages (and their attempts) older than
    WEBHOOK_RETENTION_DAYS: they name readers. Safe to run at any time."""
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    deleted, _ = WebhookMessage.objects.filter(status__in=[M.DELIVERED, M.FAILED], created_at__lt=cutoff).delete()
    return deleted
