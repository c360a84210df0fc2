"""Re-engagement: "still want these?" for readers who open nothing.

A confirmed reader who has been subscribed for REENGAGE_AFTER_MONTHS months, was sent
alerts or digests in that time (the ledger) and neither opened nor clicked any of
them (the provider's tracking events) is asked once, by email through the outbox.
They answer by pressing "Yes, keep sending", or by opening or clicking any email; a
reader who has not answered REENGAGE_GRACE_DAYS after the email was handed to the
provider is unsubscribed, with a consent event saying why. Off by default (0): opens
are unreliable (Apple Mail Privacy Protection, blocked images), so this is only for a
newsroom whose open tracking is on and trusted; and it never acts while tracking
webhooks are off, the sending provider's events are not received, or no open at all
was recorded in the window (open tracking is evidently off at the provider).

`reengage_run` walks confirmed readers in id order, a chunk per transaction, for a
bounded time, and says where to resume. Safe to run twice or side by side: a reader
is marked asked in the transaction that records their email, under a row lock taken
with SKIP LOCKED, and only if no question is open; unsubscribing is idempotent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from anymail.signals import EventType
from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from ..common.consent import Action, Purpose, RequestMeta, Source, record_consent
from ..models import Alert, Delivery, DigestRun, OutboxEmail, Subscriber, TrackingEvent
from ..outbox.services import outbox_reengage
from .services import subscriber_unsubscribe

logger = logging.getLogger(__name__)

MONTH = timedelta(days=30)
CHUNK = 1000
TIME_BUDGET_SECONDS = 60.0
ENGAGED_EVENTS = (EventType.OPENED, EventType.CLICKED)
# A reader counts as sent something in the window for ledger rows that reached the
# provider (reserved, skipped and refused rows do not).
NOT_SENT = (Delivery.Status.PENDING, Delivery.Status.SKIPPED, Delivery.Status.FAILED)


@dataclass
class RunResult:
    asked: int = 0
    kept: int = 0
    unsubscribed: int = 0
    resume_after: int | None = None  # the id to resume after; None when the walk is done
    skipped_because: str = ""


def reengagement_off_because(now: datetime | None = None) -> str:
    """Why re-engagement must not touch anyone now, or "" if it may run."""
    if settings.REENGAGE_AFTER_MONTHS <= 0:
        return "REENGAGE_AFTER_MONTHS is 0"
    if not settings.TRACKING_WEBHOOKS_ENABLED:
        return "tracking webhooks are off (TRACKING_WEBHOOKS_ENABLED), so opens are not seen"
    backend = settings.EMAIL_BACKEND
    esp = backend.split(".")[2] if backend.startswith("anymail.backends.") else ""
    if not esp or esp.replace("_", " ") not in {name.replace("_", " ") for name in settings.TRACKING_WEBHOOK_ESPS}:
        return f"the sending backend {backend} reports no tracking events we act on"
    since = (now or timezone.now()) - window()
    if not TrackingEvent.objects.filter(event_type=EventType.OPENED, occurred_at__gte=since).exists():
        return "no open was recorded in the window: open tracking looks off at the provider"
    return ""


def window() -> timedelta:
    return settings.REENGAGE_AFTER_MONTHS * MONTH


def reengage_run(*, after_id: int = 0, now: datetime | None = None,
                 budget_seconds: float | None = None) -> RunResult:
    """One pass over confirmed readers after `after_id`, chunk by chunk, until done or
    the time budget is spent (then `resume_after` says where the next run starts)."""
    now = now or timezone.now()
    reason = reengagement_off_because(now)
    if reason:
        if settings.REENGAGE_AFTER_MONTHS > 0:
            logger.warning("Re-engagement is on but did nothing: %s", reason)
        return RunResult(skipped_because=reason)
    result, started = RunResult(), time.monotonic()
    budget = TIME_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    alert_ids = list(Alert.objects.filter(published_at__gte=now - window()).values_list("pk", flat=True))
    while True:
        readers = list(Subscriber.objects.unsuppressed().filter(status=Subscriber.Status.CONFIRMED, pk__gt=after_id)
                       .order_by("pk").only("pk", "email", "email_hmac", "confirmed_at", "reengage_asked_at",
                                            "reengage_kept_at")[:CHUNK])
        if not readers:
            break
        _chunk(readers, now=now, alert_ids=alert_ids, result=result)
        after_id = readers[-1].pk
        if len(readers) < CHUNK:
            break
        if time.monotonic() - started > budget:
            result.resume_after = after_id
            break
    logger.info("Re-engagement: %d asked, %d kept, %d unsubscribed", result.asked, result.kept,
                result.unsubscribed)
    return result


def _asking_open(reader: Subscriber) -> bool:
    # An asking from before the reader's latest confirmation belongs to an earlier
    # subscription: it is void.
    return (reader.reengage_asked_at is not None and reader.confirmed_at is not None
            and reader.reengage_asked_at >= reader.confirmed_at)


def _chunk(readers: list[Subscriber], *, now: datetime, alert_ids: list[int], result: RunResult) -> None:
    since = now - window()
    asked = [reader for reader in readers if _asking_open(reader)]
    if asked:
        _follow_up(asked, now=now, result=result)
    candidates = [reader for reader in readers if not _asking_open(reader)
                  and reader.confirmed_at is not None and reader.confirmed_at <= since
                  and (reader.reengage_kept_at is None or reader.reengage_kept_at < since)]
    if not candidates:
        return
    ids = [reader.pk for reader in candidates]
    sent = _sent_in_window(ids, since=since, alert_ids=alert_ids)
    engaged = _engaged_since({reader.email_hmac for reader in candidates}, since)
    to_ask = [reader.pk for reader in candidates if reader.pk in sent and reader.email_hmac not in engaged]
    if to_ask:
        result.asked += _ask(to_ask, now=now)


def _sent_in_window(ids: list[int], *, since: datetime, alert_ids: list[int]) -> set[int]:
    """The readers among `ids` with a ledger row in the window (alert rows through the
    unique (alert, subscriber) index, digest rows through (subscriber, digest_key))."""
    sent: set[int] = set()
    if alert_ids:
        sent |= set(Delivery.objects.filter(alert_id__in=alert_ids, subscriber_id__in=ids)
                    .exclude(status__in=NOT_SENT).values_list("subscriber_id", flat=True).distinct())
    run_ids = list(DigestRun.objects.filter(created_at__gte=since).values_list("pk", flat=True))
    if run_ids:
        sent |= set(Delivery.objects.filter(~Q(digest_key=""), subscriber_id__in=ids, digest_run_id__in=run_ids)
                    .exclude(status__in=NOT_SENT).values_list("subscriber_id", flat=True).distinct())
    return sent


def _engaged_since(hmacs: set[str], since: datetime) -> dict[str, datetime]:
    """Each address hash with an open or click since `since`, with its latest one."""
    rows = (TrackingEvent.objects.filter(recipient_hmac__in=hmacs, event_type__in=ENGAGED_EVENTS,
                                         occurred_at__gte=since)
            .values("recipient_hmac").annotate(last=Max("occurred_at")))
    return {row["recipient_hmac"]: row["last"] for row in rows}


def _ask(ids: list[int], *, now: datetime) -> int:
    with transaction.atomic():
        readers = list(Subscriber.objects.select_for_update(skip_locked=True)
                       .filter(Q(reengage_asked_at__isnull=True) | Q(reengage_asked_at__lt=F("confirmed_at")),
                               pk__in=ids, status=Subscriber.Status.CONFIRMED))
        if not readers:
            return 0
        Subscriber.objects.filter(pk__in=[reader.pk for reader in readers]).update(reengage_asked_at=now)
        outbox_reengage(readers)
    return len(readers)


def _follow_up(readers: list[Subscriber], *, now: datetime, result: RunResult) -> None:
    """Readers with a question open: kept if they opened or clicked anything since
    it was asked; unsubscribed once its email is REENGAGE_GRACE_DAYS old unanswered."""
    engaged = _engaged_since({reader.email_hmac for reader in readers},
                             min(reader.reengage_asked_at for reader in readers))
    waiting = []
    for reader in readers:
        last = engaged.get(reader.email_hmac)
        if last is not None and last >= reader.reengage_asked_at:
            result.kept += _keep(reader.pk, asked_at=reader.reengage_asked_at, now=now)
        else:
            waiting.append(reader)
    if not waiting:
        return
    # The grace period runs from the hand-off of the email, so a reader whose email is
    # still being retried (or was never sent) is never unsubscribed for not answering.
    sent = dict(OutboxEmail.objects.filter(kind=OutboxEmail.Kind.REENGAGE, status=OutboxEmail.Status.SENT,
                                           subscriber_id__in=[reader.pk for reader in waiting])
                .values("subscriber_id").annotate(last=Max("sent_at")).values_list("subscriber_id", "last"))
    grace = timedelta(days=settings.REENGAGE_GRACE_DAYS)
    for reader in waiting:
        handed_off = sent.get(reader.pk)
        if handed_off is not None and handed_off >= reader.reengage_asked_at and handed_off + grace <= now:
            result.unsubscribed += _unsubscribe(reader, handed_off=handed_off)


def _keep(subscriber_id: int, *, asked_at: datetime, now: datetime) -> int:
    return Subscriber.objects.filter(pk=subscriber_id, reengage_asked_at=asked_at).update(
        reengage_asked_at=None, reengage_kept_at=now)


def _unsubscribe(reader: Subscriber, *, handed_off: datetime) -> int:
    note = (f"No open or click for {settings.REENGAGE_AFTER_MONTHS} months, and no answer within "
            f"{settings.REENGAGE_GRACE_DAYS} days to the \u201cstill want these?\u201d email sent "
            f"{handed_off:%Y-%m-%d}")
    with transaction.atomic():
        # Still unanswered under the lock: a "keep sending" press that just committed wins.
        if not Subscriber.objects.select_for_update().filter(
                pk=reader.pk, status=Subscriber.Status.CONFIRMED, reengage_asked_at=reader.reengage_asked_at).exists():
            return 0
        changed = subscriber_unsubscribe(subscriber_id=reader.pk, source=Source.REENGAGEMENT,
                                         meta=RequestMeta(), note=note, attribute=False)
        Subscriber.objects.filter(pk=reader.pk).update(reengage_asked_at=None)
    return int(changed)


def reengage_keep(*, subscriber: Subscriber, meta: RequestMeta) -> bool:
    """"Yes, keep sending": close the reader's open question and record their answer.
    Returns False (and changes nothing) if they are no longer subscribed. Safe to
    repeat: the answer is recorded once per question."""
    with transaction.atomic():
        reader = Subscriber.objects.select_for_update().filter(pk=subscriber.pk).first()
        if reader is None or reader.status != Subscriber.Status.CONFIRMED:
            return False
        was_open = _asking_open(reader)
        reader.reengage_asked_at, reader.reengage_kept_at = None, timezone.now()
        reader.save(update_fields=["reengage_asked_at", "reengage_kept_at"])
        if was_open:
            record_consent(subscriber=reader, purpose=Purpose.ALERTS, action=Action.GIVEN,
                           source=Source.EMAIL_LINK, meta=meta,
                           note="Answered \u201cYes, keep sending\u201d to the re-engagement email")
    return True
