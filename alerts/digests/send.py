"""Sending one batch of digests: the reserved readers still eligible, grouped by the
exact list of alerts their digest holds (one provider call per group), each row of the
ledger marked with what became of it.

A run fails over to the second provider as an alert does (alerts/sending/failover.py):
once the primary has been failing for the failover delay, DigestRun.failover_at is
set and the run's remaining batches, and those waiting for a retry, go through
EMAIL_BACKEND_FALLBACK; the reserved rows keep each reader to one digest."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from ..common import metrics
from ..common.cache import ProcessCache
from ..emails import RenderedAlert, digest_rendering
from ..models import Alert, Batch, Delivery, DigestRun, Subscriber, Suppression
from ..sending import failover, ledger
from ..sending.batches import (
    BatchOwner,
    claim_batch,
    close_batch,
    failed_outcomes,
    keeper,
    retry_or_give_up,
    set_aside_if_poison,
    wake_waiting,
)
from ..sending.ledger import Outcome
from ..sending.provider import PermanentSendError, TransientSendError, deliver_rendered, provider_label
from .schedule import PERIOD, Period, digest_run_finish_if_done, period_of

# Keyed by each alert's last edit too: an id alone can come back (SQLite reuses the id
# of a deleted last row), and the cache lives as long as the worker.
SEND_TASK = "alerts.send_digest_batch"
_renderings: ProcessCache[RenderedAlert] = ProcessCache("digest renderings", size=200)


def digest_batch_send(*, batch_id: int, task_id: str = "") -> str:
    """Send the reserved digests of one batch, then finish the run if it was the last.
    Safe to re-run: only rows still PENDING are sent, and the claim keeps two workers
    off one batch. Raises RetryLater on transient provider errors, after recording what
    was already sent."""
    claim = claim_batch(batch_id, task_id=task_id)
    if claim.batch is None:
        return claim.status
    batch = claim.batch
    with keeper.holding(batch):
        status = _send(batch)
    if status == Batch.Status.SENT and batch.waiting_since:
        wake_waiting(BatchOwner.of(batch), SEND_TASK)  # the provider is back
    digest_run_finish_if_done(run_id=batch.digest_run_id)
    return status


def _send(batch: Batch) -> str:
    pending = Delivery.objects.of_batch(batch).filter(status=Delivery.Status.PENDING)
    set_aside = set_aside_if_poison(batch)
    if set_aside:
        pending.update(status=Delivery.Status.FAILED, error="set aside: its send kept killing the worker")
        return set_aside
    run = batch.digest_run
    period = period_of(run)
    rows = _eligible_rows(pending)
    groups, nothing_new = _group_by_content(rows, period)
    _mark(batch, [Outcome(sid, Delivery.Status.SKIPPED) for sid in nothing_new])
    # The run went over to the fallback provider (set on the run, read with the claim).
    on_fallback = failover.enabled() and getattr(batch, "owner_failover_at", None) is not None
    backend = failover.fallback_backend() if on_fallback else None
    on_primary = failover.enabled() and not on_fallback  # the primary's health record hears of it
    report_success = on_primary
    handed = False
    for alert_ids, recipients in groups.items():
        try:
            results = _deliver(_rendering(alert_ids, run.frequency), recipients, period, backend)
        except TransientSendError as error:
            _sent(batch, error.partial_results, period)
            at_most = _fail_over_if_due(batch, error) if on_primary else None
            status = retry_or_give_up(batch, error, at_most=at_most)  # raises RetryLater until it gives up
            pending.update(status=Delivery.Status.FAILED, error=str(error)[:400])
            return status
        except PermanentSendError as error:
            results = failed_outcomes((sid for sid, _ in recipients), str(error))
        else:
            if report_success:
                failover.primary_succeeded()  # once a batch is enough: the primary is up
                report_success = False
        handed = handed or any(row.status not in ledger.NOT_SENT for row in results)
        _sent(batch, results, period)
    # Unsubscribed or suppressed since the tick: nothing is sent to them.
    pending.update(status=Delivery.Status.SKIPPED, error="no longer subscribed")
    return close_batch(batch, Batch.Status.SENT, provider=provider_label(backend) if handed else "")


def _fail_over_if_due(batch: Batch, error: TransientSendError) -> float:
    """The primary failed this batch: once it has been failing for the failover delay,
    the rest of the run goes through the fallback (failover.fail_over_if_due). The
    most the batch's retry may wait."""
    def switch() -> bool:
        return bool(DigestRun.objects.filter(pk=batch.digest_run_id, failover_at__isnull=True)
                    .update(failover_at=Now()))

    return failover.fail_over_if_due(BatchOwner.of(batch), error, switch=switch, task_name=SEND_TASK)


def _deliver(rendered: RenderedAlert, recipients: list[tuple[int, str]], period: Period,
             backend: str | None) -> list[Outcome]:
    """One group's digest to the provider (`backend`, else EMAIL_BACKEND): one Outcome
    each; raises TransientSendError or PermanentSendError. No stored template is
    named, so Amazon SES sends it one message per reader."""
    # Observability: time the call and count its outcomes (alerts/common/metrics.py).
    with metrics.provider_call(kind="digest", recipients=len(recipients), failures=CALL_FAILURES,
                               backend_path=backend) as call:
        results = deliver_rendered(rendered, recipients, tag=f"{period.frequency}-digest",
                                   metadata={"digest": period.key}, backend_path=backend)
        call.statuses = [row.status for row in results]
    return results


CALL_FAILURES = {TransientSendError: "retried", PermanentSendError: "failed"}


def _eligible_rows(pending: QuerySet[Delivery]) -> list[tuple[int, str, datetime | None, datetime | None]]:
    return list(pending.filter(subscriber__status=Subscriber.Status.CONFIRMED).filter(
        ~Exists(Suppression.objects.active().filter(email_hmac=OuterRef("subscriber__email_hmac"))),
    ).order_by("subscriber_id").values_list("subscriber_id", "subscriber__email", "subscriber__last_digest_at",
                                            "subscriber__confirmed_at"))


def _group_by_content(rows, period: Period):
    """Group recipients by the exact list of alerts their digest holds (so each group is
    one provider call); return the groups and the subscribers with nothing new.

    Corrections and updates published since a reader's last digest are in it beside
    their alert, for the readers who take the alert in this digest or took it in an
    earlier one (see _took_in_a_digest); nobody else gets a follow-up in a digest."""
    oldest = period.starts_at - 2 * PERIOD[period.frequency]
    window = Alert.objects.filter(status__in=[Alert.Status.SENDING, Alert.Status.SENT],
                                  published_at__gt=oldest, published_at__lte=period.starts_at)
    alerts = list(window.filter(follow_up_of__isnull=True).order_by("-published_at")
                  .values_list("pk", "published_at"))
    follow_ups = list(window.filter(follow_up_of__isnull=False).order_by("published_at")
                      .values_list("pk", "published_at", "follow_up_of_id", "follow_up_of__published_at"))
    originals = {original: published for _, _, original, published in follow_ups}
    ids = [sid for sid, _, _, _ in rows]
    alert_topics = _topics(Alert.topics.through, "alert_id", [pk for pk, _ in alerts] + list(originals))
    follows = _topics(Subscriber.topics.through, "subscriber_id", ids)
    # An alert they already received as it happens is not repeated in the digest.
    every = [pk for pk, _ in alerts] + [pk for pk, _, _, _ in follow_ups] + list(originals)
    had = set(Delivery.objects.filter(subscriber_id__in=ids, alert_id__in=every)
              .values_list("subscriber_id", "alert_id"))
    groups: dict[tuple[int, ...], list[tuple[int, str]]] = defaultdict(list)
    nothing_new = []
    for sid, email, last, confirmed in rows:
        since = max(last or period.previous_at, oldest)
        mine = follows.get(sid)
        chosen = tuple(pk for pk, published in alerts if published > since and (sid, pk) not in had
                       and _follows(mine, alert_topics.get(pk)))
        chosen += tuple(pk for pk, published, original, original_at in follow_ups
                        if published > since and (sid, pk) not in had
                        and (original in chosen or (
                            _took_in_a_digest(original_at, last, confirmed, PERIOD[period.frequency]) and (sid, original) not in had
                            and _follows(mine, alert_topics.get(original)))))
        if chosen:
            groups[chosen].append((sid, email))
        else:
            nothing_new.append(sid)
    return groups, nothing_new


def _follows(mine: set[int] | None, topics: set[int] | None) -> bool:
    """A reader with no topics follows them all; an alert with none goes to everyone."""
    return not mine or not topics or bool(mine & topics)


def _took_in_a_digest(original_at: datetime | None, last: datetime | None, confirmed: datetime | None,
                      period: timedelta) -> bool:
    """Whether a digest reader (who follows its topics and did not get it as it
    happened) took an alert published at `original_at` in an earlier digest. Digest
    rows do not list their alerts, so this is judged as the digest chose them: the
    reader has been sent a digest since the alert, and was a reader when it came out or
    joined within a period after it (a first digest holds the period before it)."""
    return (last is not None and original_at is not None and confirmed is not None
            and last >= original_at and confirmed - period < original_at)


def _topics(through, key: str, ids: list[int]) -> dict[int, set[int]]:
    mapping: dict[int, set[int]] = defaultdict(set)
    for owner, topic in through.objects.filter(**{f"{key}__in": ids}).values_list(key, "topic_id"):
        mapping[owner].add(topic)
    return mapping


def _rendering(alert_ids: tuple[int, ...], frequency: str) -> RenderedAlert:
    stamps = tuple(Alert.objects.filter(pk__in=alert_ids).order_by("pk").values_list("pk", "updated_at"))

    def render() -> RenderedAlert:
        alerts = list(Alert.objects.filter(pk__in=alert_ids).select_related("follow_up_of").order_by("-published_at"))
        return digest_rendering(alerts, frequency)

    return _renderings.get((stamps, frequency), render)


def _sent(batch: Batch, results: list[Outcome], period: Period) -> None:
    _mark(batch, results)
    sent = [row.subscriber_id for row in results if row.status == Delivery.Status.SENT]
    # "Through" the period start: the next digest starts from the alerts after it.
    _update_ids(Subscriber, sent, last_digest_at=period.starts_at)


def _mark(batch: Batch, results: list[Outcome]) -> None:
    """Update this batch's reserved rows in one statement per outcome."""
    if not results:
        return
    now = timezone.now()
    by_outcome: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for sid, status, message_id, error in results:
        by_outcome[(status, message_id, error)].append(sid)
    with transaction.atomic():
        for (status, message_id, error), sids in by_outcome.items():
            _update_ids(Delivery, sids, key="subscriber_id",
                        where={"digest_run_id": batch.digest_run_id, "batch_id": batch.pk, "status": "pending"},
                        status=status, message_id=message_id, error=error[:400],
                        sent_at=now if status == Delivery.Status.SENT else None)


def _update_ids(model, ids: list[int], **kwargs) -> None:
    (ledger.update_ids if ledger.on_postgresql() else ledger.update_ids_portable)(model, ids, **kwargs)
