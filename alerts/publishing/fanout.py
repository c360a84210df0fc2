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
from dataclasses import dataclass, replace
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Max, Q, QuerySet, Sum
from django.db.models.functions import Now
from django.utils import timezone

from ..common import metrics
from ..common.cache import ProcessCache
from ..common.queueing import enqueue
from ..emails import RenderedAlert, alert_rendering
from ..models import Alert, Batch
from ..observability import logcontext
from ..sending import failover, ledger
from ..sending.batches import (
    BatchOwner,
    claim_batch,
    close_batch,
    create_batches,
    failed_outcomes,
    keeper,
    ranges_after,
    record_partial,
    retry_or_give_up,
    set_aside_if_poison,
    wake_waiting,
)
from ..sending.ledger import Outcome
from ..sending.provider import (
    PermanentSendError,
    TransientSendError,
    delete_stored_template,
    deliver_rendered,
    provider_label,
    sending_profile,
)
from . import corrections
from .audience import audience, audience_before_suppression, follow_up_ranges, recipients
from .events import alert_finished_emit

logger = logging.getLogger(__name__)

SEND_TASK = "alerts.send_batch"

# Per worker process: a published alert's content, publication time and topics no
# longer change, and an edit would change updated_at (part of every key).
_alerts_cache: ProcessCache[Alert] = ProcessCache("published alerts", size=20)
_render_cache: ProcessCache[RenderedAlert] = ProcessCache("alert renderings", size=20)


class CutLost(Exception):
    """Another walker has taken the cut over: this one must stop writing."""


@dataclass(frozen=True)
class CutLease:
    """The one walker cutting an alert's audience: a lease on the alert row, renewed at
    every step and fenced, so that a second walker (a re-queued or redelivered cut)
    either waits for a live one or takes over from a dead one, and the loser can no
    longer write batches whose ranges would overlap the winner's."""

    alert_id: int
    fence: int

    @classmethod
    def claim(cls, alert_id: int, task_id: str = "") -> CutLease | None:
        """The cut, if no live walker holds it (or it is this very task, redelivered
        because its worker died); None otherwise, or once the alert is fully cut."""
        lease = timedelta(seconds=settings.CUT_LEASE_SECONDS)
        free = Q(cut_lease_expires_at__isnull=True) | Q(cut_lease_expires_at__lt=Now())
        if task_id:
            free |= Q(cut_by=task_id)
        taken = Alert.objects.filter(free, pk=alert_id, status=Alert.Status.SENDING,
                                     fanned_out_at__isnull=True).update(
            cut_by=task_id, cut_fence=F("cut_fence") + 1, cut_lease_expires_at=Now() + lease)
        if not taken:
            return None
        return cls(alert_id, Alert.objects.filter(pk=alert_id).values_list("cut_fence", flat=True).get())

    def _held(self) -> QuerySet[Alert]:
        return Alert.objects.filter(pk=self.alert_id, cut_fence=self.fence)

    def renew(self) -> None:
        """Extend the lease; raise CutLost if another walker has taken the cut."""
        lease = timedelta(seconds=settings.CUT_LEASE_SECONDS)
        if not self._held().update(cut_lease_expires_at=Now() + lease):
            raise CutLost(f"alert {self.alert_id}: the cut was taken over")

    def finish(self, **fields) -> bool:
        return bool(self._held().update(cut_lease_expires_at=None, **fields))


def alert_fan_out(*, alert_id: int, task_id: str = "") -> int:
    """Cut the alert's audience into batches and enqueue one send task per batch.

    Returns the number of batches cut by this run. One walker at a time (CutLease); a
    redelivered or re-queued cut resumes after the highest range already cut, first
    queueing any batch that was committed but perhaps never queued, and a range cut
    twice meets the unique (alert, first_subscriber_id) and is ignored.
    """
    cut = CutLease.claim(alert_id, task_id)
    if cut is None:
        return 0
    alert = Alert.objects.get(pk=alert_id)
    size = sending_profile().batch_size
    start = alert.batches.aggregate(m=Max("last_subscriber_id"))["m"] or 0
    if start:
        _requeue_unstarted(alert_id)
    count = 0
    try:
        count = _cut(alert, start, size, cut)
    except CutLost:
        logger.warning("Alert %s: the cut was taken over by another walker; this one stops", alert_id)
        return count
    cut.finish(fanned_out_at=timezone.now(), audience_size=_planned_total(alert_id))
    logger.info("Alert %s: cut %d batches of up to %d", alert_id, count, size)
    alert_finish_if_done(alert_id=alert_id)
    return count


def _cut(alert: Alert, start: int, size: int, cut: CutLease) -> int:
    """Cut the audience after id `start` into batches; the first batch is cut and
    queued before the rest of the audience is walked, so the first hand-off does not
    wait for a million-row scan. A follow-up walks its original's ledger instead."""
    owner = BatchOwner(alert_id=alert.pk)
    if alert.follow_up_of_id:
        ranges = follow_up_ranges(alert.follow_up_of_id, start, size)
        first = next(ranges, None)
        if first is None:
            return 0
        return (create_batches(owner, [first], SEND_TASK, keep=cut.renew)
                + create_batches(owner, ranges, SEND_TASK, keep=cut.renew))
    members = audience(alert).filter(pk__gt=start).order_by("pk").values_list("pk", flat=True)
    first_ids = list(members[:size])
    if not first_ids:
        return 0
    count = create_batches(owner, [(first_ids[0], first_ids[-1], len(first_ids))], SEND_TASK, keep=cut.renew)
    rest = ranges_after(audience_before_suppression(alert), first_ids[-1], size, join_suppressions=True)
    return count + create_batches(owner, rest, SEND_TASK, keep=cut.renew)


def _requeue_unstarted(alert_id: int) -> None:
    """Queue again the batches an earlier walker committed but may never have queued
    (it died between the commit and the queueing): a duplicate is harmless, since a
    send claims its batch first."""
    for batch_id in Batch.objects.filter(alert_id=alert_id, status=Batch.Status.PENDING, attempts=0,
                                         next_attempt_at__isnull=True).values_list("pk", flat=True):
        enqueue(SEND_TASK, batch_id=batch_id)


def _planned_total(alert_id: int) -> int:
    return Batch.objects.filter(alert_id=alert_id).aggregate(n=Sum("planned_count"))["n"] or 0


def batch_send(*, batch_id: int, task_id: str = "") -> str:
    """Send one batch in one provider call and record every recipient in the ledger.

    Returns the batch's resulting status. Safe to run twice: the claim lets one run
    through; a re-run after the batch was sent does nothing. Raises RetryLater for
    transient provider errors (after handing the batch back) and while another worker
    holds the batch's lease or the batch waits for its next attempt.
    """
    claim = claim_batch(batch_id, task_id=task_id)
    if claim.batch is None:
        return claim.status
    batch = claim.batch
    logcontext.bind(alert_id=batch.alert_id)  # Observability: log lines name the alert.
    with keeper.holding(batch):
        status = _send(batch)
    if status == Batch.Status.SENT and batch.waiting_since:
        wake_waiting(BatchOwner.of(batch), SEND_TASK)  # the provider is back
    alert_finish_if_done(alert_id=batch.alert_id)
    return status


def _send(batch: Batch) -> str:
    alert = _published_alert(batch)
    if batch.alert_status == Alert.Status.CANCELLED:
        return close_batch(batch, Batch.Status.CANCELLED)
    set_aside = set_aside_if_poison(batch)
    if set_aside:
        return set_aside
    readers = recipients(batch, alert)
    # The alert went over to the fallback provider (set on the alert, read with the claim).
    on_fallback = failover.enabled() and getattr(batch, "owner_failover_at", None) is not None
    backend = failover.fallback_backend() if on_fallback else None
    handed: list[Outcome] = []  # what earlier calls of this attempt handed over, recorded

    def progress(rows: list[Outcome]) -> None:
        record_partial(batch, rows)
        handed.extend(rows)

    try:
        results = deliver(alert, readers, on_progress=progress, backend_path=backend)
    except TransientSendError as error:
        record_partial(batch, error.partial_results)
        at_most = _fail_over_if_due(batch, error) if failover.enabled() and not on_fallback else None
        return retry_or_give_up(batch, error, subscriber_ids=[sid for sid, _ in readers], at_most=at_most)
    except PermanentSendError as error:
        done = {row.subscriber_id for row in handed}
        failed = failed_outcomes((sid for sid, _ in readers if sid not in done), str(error))
        return close_batch(batch, Batch.Status.FAILED, error=str(error), results=handed + failed,
                           provider=provider_label(backend) if handed else "")
    if failover.enabled() and not on_fallback and readers:
        failover.primary_succeeded()
    return close_batch(batch, Batch.Status.SENT, skipped=batch.planned_count - len(readers),
                       results=results, provider=provider_label(backend) if readers else "")


def _fail_over_if_due(batch: Batch, error: TransientSendError) -> float:
    """The primary failed this batch: once it has been failing for the failover delay,
    the rest of the alert goes through the fallback (failover.fail_over_if_due). The
    most the batch's retry may wait."""
    def switch() -> bool:
        return bool(Alert.objects.filter(pk=batch.alert_id, failover_at__isnull=True).update(failover_at=Now()))

    return failover.fail_over_if_due(BatchOwner.of(batch), error, switch=switch, task_name=SEND_TASK)


def _published_alert(batch: Batch) -> Alert:
    """The batch's alert, read once per worker process rather than once per batch; its
    status is read fresh with every claim."""
    return _alerts_cache.get((batch.alert_id, batch.alert_updated_at),
                             lambda: Alert.objects.get(pk=batch.alert_id))


def deliver(alert: Alert, readers: list[tuple[int, str]], on_progress=None,
            backend_path: str | None = None) -> list[Outcome]:
    """Hand readers to the provider (`backend_path`, else EMAIL_BACKEND): one Outcome
    each; raises TransientSendError or PermanentSendError. Per-message sends, and a
    batch split over several calls, report each round to `on_progress`."""
    if not readers:
        return []
    rendered = _render_cache.get((alert.pk, alert.updated_at), lambda: alert_rendering(alert))
    metadata = {"alert_id": str(alert.pk)}
    # Observability: time the call and count its outcomes (alerts/common/metrics.py).
    with metrics.provider_call(kind="alert", recipients=len(readers), failures=CALL_FAILURES,
                               backend_path=backend_path) as call:
        if alert.follow_up_of_id:
            results = _deliver_threaded(alert, rendered, readers, metadata, on_progress, backend_path)
        else:
            results = deliver_rendered(rendered, readers, tag="breaking-alert", metadata=metadata,
                                       on_progress=on_progress, backend_path=backend_path,
                                       template_key=_template_key(alert.pk))
        call.statuses = [row.status for row in results]
    return results


CALL_FAILURES = {TransientSendError: "retried", PermanentSendError: "failed"}


def _template_key(alert_id: int) -> str:
    """The alert's stored template at a provider that needs one (Amazon SES)."""
    return f"alert-{alert_id}"


def _deliver_threaded(alert: Alert, rendered: RenderedAlert, readers: list[tuple[int, str]],
                      metadata: dict[str, str], on_progress=None,
                      backend_path: str | None = None) -> list[Outcome]:
    """A follow-up's readers, one provider call per copy of the original they received
    (so each copy names its own original in In-Reply-To): usually one or two calls a
    batch, where the original went out in batch calls. What went out before a failure
    is kept: a transient error carries it, a permanent one fails only its own group."""
    done: list[Outcome] = []
    for message_id, group in corrections.by_original_message(alert.follow_up_of_id, readers):
        threaded = replace(rendered, headers={**rendered.headers, **corrections.thread_headers(message_id)})
        try:
            done += deliver_rendered(threaded, group, tag=f"breaking-{alert.kind}", metadata=metadata,
                                     on_progress=on_progress, backend_path=backend_path)
        except TransientSendError as error:
            error.partial_results = done + list(error.partial_results)
            raise
        except PermanentSendError as error:
            if not done:
                raise
            done += failed_outcomes((sid for sid, _ in group), str(error))
    return done


def alert_finish_if_done(*, alert_id: int) -> bool:
    """Mark a sending alert finished once it is fully cut and no batch is open: failed
    if every batch failed, else sent. True if this call finished it. Every batch runs
    this as it closes, outside its own transaction, so that of two batches closing
    together the later sees the other's commit (the sweeper catches any both miss).
    The alert's stored templates, where the providers keep them, are deleted then."""
    finished = ledger.finish_alert(alert_id, timezone.now())
    if finished:
        # Observability: the alert's hand-off times, once (alerts/common/metrics.py).
        metrics.observe_handoffs(*Alert.objects.filter(pk=alert_id).values_list(
            "published_at", "first_handoff_at", "last_handoff_at").get())
        for backend in (None, failover.fallback_backend() or None) if failover.enabled() else (None,):
            delete_stored_template(_template_key(alert_id), backend)
        alert_finished_emit(alert_id)
    return finished
