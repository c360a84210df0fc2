"""The fan-out: from a published alert to provider calls, every eligible subscriber once.

1. `alert_fan_out` cuts the alert's audience (`audience.py`) into batches with the
   shared engine (`alerts.sending.batches`) and queues one `alerts.send_batch` task for
   each; the first batch is queued before the rest of the audience is walked.
2. `batch_send` claims one batch, selects the recipients of its range who are *still*
   eligible, hands them to the provider in one call, records them in the ledger, and
   finishes the alert once its last batch has closed.
"""

from __future__ import annotations

import logging

from django.db.models import Max, Sum
from django.utils import timezone

from ..common.cache import ProcessCache
from ..emails import RenderedAlert, alert_rendering
from ..models import Alert, Batch
from ..sending import ledger
from ..sending.batches import (
    MAX_ATTEMPTS,
    BatchOwner,
    RetryLater,
    claim_batch,
    close_batch,
    create_batches,
    failed_outcomes,
    ranges_after,
    record_partial,
    release_batch,
    retry_delay,
)
from ..sending.ledger import Outcome
from ..sending.provider import PermanentSendError, TransientSendError, deliver_rendered, sending_profile
from .audience import audience, audience_before_suppression, recipients

logger = logging.getLogger(__name__)

SEND_TASK = "alerts.send_batch"

# Per worker process: a published alert's content, publication time and topics no
# longer change, and an edit would change updated_at (part of every key).
_alerts_cache: ProcessCache[Alert] = ProcessCache("published alerts", size=20)
_render_cache: ProcessCache[RenderedAlert] = ProcessCache("alert renderings", size=20)


def alert_fan_out(*, alert_id: int) -> int:
    """Cut the alert's audience into batches and enqueue one send task per batch.

    Returns the number of batches cut by this run. Safe to run twice or to resume after
    a crash: it continues after the highest range already cut, and a range cut twice
    meets the unique (alert, first_subscriber_id) constraint and is ignored.
    """
    alert = Alert.objects.filter(pk=alert_id, status=Alert.Status.SENDING).first()
    if alert is None or alert.fanned_out_at:
        return 0
    size = sending_profile().batch_size
    start = alert.batches.aggregate(m=Max("last_subscriber_id"))["m"] or 0
    members = audience(alert).filter(pk__gt=start).order_by("pk").values_list("pk", flat=True)
    # The first batch is cut and queued before the rest of the audience is walked, so
    # the first hand-off does not wait for a million-row scan.
    first = list(members[:size])
    cut = 0
    if first:
        owner = BatchOwner(alert_id=alert.pk)
        cut += create_batches(owner, [(first[0], first[-1], len(first))], SEND_TASK)
        rest = ranges_after(audience_before_suppression(alert), first[-1], size, join_suppressions=True)
        cut += create_batches(owner, rest, SEND_TASK)
    Alert.objects.filter(pk=alert_id).update(
        fanned_out_at=timezone.now(), audience_size=_planned_total(alert_id)
    )
    logger.info("Alert %s: cut %d batches of up to %d", alert_id, cut, size)
    alert_finish_if_done(alert_id=alert_id)
    return cut


def _planned_total(alert_id: int) -> int:
    return Batch.objects.filter(alert_id=alert_id).aggregate(n=Sum("planned_count"))["n"] or 0


def batch_send(*, batch_id: int) -> str:
    """Send one batch in one provider call and record every recipient in the ledger.

    Returns the batch's resulting status. Safe to run twice: the claim lets one run
    through; a re-run after the batch was sent does nothing. Raises RetryLater for
    transient provider errors (after releasing the claim) and when another worker holds
    the batch's lease, so a redelivered task waits for the lease rather than vanishing.
    """
    claim = claim_batch(batch_id)
    if claim.batch is None:
        return claim.status
    status = _send(claim.batch)
    alert_finish_if_done(alert_id=claim.batch.alert_id)
    return status


def _send(batch: Batch) -> str:
    alert = _published_alert(batch)
    if batch.alert_status == Alert.Status.CANCELLED:
        return close_batch(batch, Batch.Status.CANCELLED)
    if batch.attempts > MAX_ATTEMPTS:
        return close_batch(batch, Batch.Status.FAILED,
                           error=f"Gave up after {MAX_ATTEMPTS} attempts: {batch.last_error}")
    readers = recipients(batch, alert)
    try:
        results = deliver(alert, readers)
    except TransientSendError as error:
        record_partial(batch, error.partial_results)
        release_batch(batch, str(error))
        raise RetryLater(retry_delay(batch.attempts, error.retry_after), str(error)) from error
    except PermanentSendError as error:
        failed = failed_outcomes((sid for sid, _ in readers), str(error))
        return close_batch(batch, Batch.Status.FAILED, error=str(error), results=failed)
    return close_batch(batch, Batch.Status.SENT, skipped=batch.planned_count - len(readers),
                       results=results)


def _published_alert(batch: Batch) -> Alert:
    """The batch's alert, read once per worker process rather than once per batch; its
    status is read fresh with every claim."""
    return _alerts_cache.get((batch.alert_id, batch.alert_updated_at),
                             lambda: Alert.objects.get(pk=batch.alert_id))


def deliver(alert: Alert, readers: list[tuple[int, str]]) -> list[Outcome]:
    """Hand readers to the provider: one Outcome each; raises TransientSendError or
    PermanentSendError."""
    if not readers:
        return []
    rendered = _render_cache.get((alert.pk, alert.updated_at), lambda: alert_rendering(alert))
    return deliver_rendered(rendered, readers, tag="breaking-alert", metadata={"alert_id": str(alert.pk)})


def alert_finish_if_done(*, alert_id: int) -> bool:
    """Mark a sending alert finished once it is fully cut and no batch is open: failed
    if every batch failed, else sent. True if this call finished it. Every batch runs
    this as it closes, outside its own transaction, so that of two batches closing
    together the later sees the other's commit (the sweeper catches any both miss)."""
    return ledger.finish_alert(alert_id, timezone.now())
