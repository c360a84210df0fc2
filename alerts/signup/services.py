"""Signing up and confirming: the double opt-in, in two halves.

1. The web request records a `ConsentRequest` in one short transaction and queues
   it (`signup_request`). It does the same work for every address, new, pending,
   confirmed, unsubscribed or suppressed, so neither the answer nor its timing says
   which it was.
2. A worker runs the state machine and sends the confirmation email
   (`consent_request_process`), with the per-address cooldown.

The confirmation link names the request, and confirming grants exactly the purposes
that request asked for (`consent_request_confirm`): a third party re-submitting a
pending reader's address with the marketing box ticked cannot have that tick adopted
by the reader's own, earlier link.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import Lower
from django.utils import timezone

from ..common import wording
from ..common.addresses import email_hmac
from ..common.consent import Action, Purpose, RequestMeta, Source, record_consent
from ..common.outbox import Event, subscriber_data, webhook_emit
from ..common.queueing import enqueue, enqueue_on_commit
from ..common.ratelimits import allow_confirmation_email
from ..common.suppression import active_suppression, lift_erasure
from ..common.tokens import TokenExpired, TokenInvalid, confirm_tokens
from ..emails import confirmation_message
from ..models import ConsentRequest, Subscriber, Suppression, Wording

logger = logging.getLogger(__name__)

PROCESS_TASK = "alerts.process_consent_request"


def signup_request(*, email: str, marketing: bool, source: str, meta: RequestMeta,
                   timezone_name: str = "") -> int:
    """Record a signup from a form and queue it for a worker. The same queries and the
    same broker publish for every address, whatever we know of it: the caller answers
    every address alike, and the work it did must not tell them apart either.

    `email` must already be normalised (addresses.normalize_email). Returns the
    request's id (for tests and the signup-spike fast path, never for the answer)."""
    with transaction.atomic():
        request = ConsentRequest.objects.create(
            email=email, email_hmac=email_hmac(email), alerts=True, marketing=marketing,
            source=source, time_zone=timezone_name[:64], ip_address=meta.stored_ip(),
            user_agent=meta.stored_user_agent(), wording=wording.current(Wording.Kind.ALERTS),
            marketing_wording=wording.current(Wording.Kind.MARKETING) if marketing else None,
            privacy_notice=wording.current(Wording.Kind.PRIVACY),
        )
        enqueue_on_commit(PROCESS_TASK, request_id=request.pk)
    return request.pk


def consent_request_for(*, subscriber: Subscriber, alerts: bool, marketing: bool, source: str,
                        meta: RequestMeta, wording_kind: str | None = None) -> ConsentRequest:
    """Ask a known reader to confirm by email (coming back after unsubscribing, or
    marketing ticked in the preference centre). The caller has already made the state
    change and recorded the request as consent evidence; the worker only sends the
    email. Call inside the caller's transaction."""
    request = ConsentRequest.objects.create(
        email=subscriber.email, email_hmac=subscriber.email_hmac, subscriber=subscriber,
        alerts=alerts, marketing=marketing, source=source, ip_address=meta.stored_ip(),
        user_agent=meta.stored_user_agent(),
        wording=wording.current(wording_kind or Wording.Kind.ALERTS) if alerts else None,
        marketing_wording=wording.current(Wording.Kind.MARKETING) if marketing else None,
        privacy_notice=wording.current(Wording.Kind.PRIVACY),
    )
    enqueue_on_commit(PROCESS_TASK, request_id=request.pk)
    return request


def consent_requests_unqueued(*, before: datetime, limit: int = 10000) -> list[int]:
    """Requests committed but never processed before `before`: their task was lost
    (broker down when the request committed). For the sweeper to queue again with
    `enqueue(PROCESS_TASK, request_id=...)`; processing twice is harmless."""
    return list(ConsentRequest.objects.filter(processed_at__isnull=True, created_at__lt=before)
                .order_by("created_at").values_list("pk", flat=True)[:limit])


def consent_request_process(*, request_id: int) -> bool:
    """The worker's half: apply a recorded request, then send its confirmation email
    if one is due. Returns whether an email was sent.

    Safe to run twice: the request is locked and marked processed in the transaction
    that applies it, so a second run finds it done; a re-sent email is held back by the
    per-address cooldown."""
    with transaction.atomic():
        request = (ConsentRequest.objects.select_for_update()
                   .filter(pk=request_id, processed_at__isnull=True).first())
        if request is None:
            return False
        due = _apply_signup(request) if request.subscriber_id is None else _known_reader_due(request)
        request.processed_at = timezone.now()
        request.save(update_fields=["subscriber", "processed_at"])
    return _send_confirmation(request) if due else False


def _apply_signup(request: ConsentRequest) -> bool:
    """The state machine of a signup. True if a confirmation email is due."""
    suppression = active_suppression(request.email)
    if suppression and suppression.reason != Suppression.Reason.ERASED:
        # Bounced or complained: never mail it again from a form anyone can fill in.
        logger.info("Signup request %s for a suppressed address ignored (%s)", request.pk, suppression.reason)
        return False
    subscriber = _lock_or_create(request)
    request.subscriber = subscriber
    if subscriber.status == Subscriber.Status.CONFIRMED:
        return False
    if subscriber.status == Subscriber.Status.UNSUBSCRIBED:
        # Coming back: a fresh double opt-in.
        subscriber.status = Subscriber.Status.PENDING
        subscriber.created_at = timezone.now()
        subscriber.save(update_fields=["status", "created_at"])
    _record(request, subscriber, Action.REQUESTED)
    if settings.DOUBLE_OPT_IN or suppression:
        return True
    _grant(request, subscriber, source=request.source, meta=_meta_of(request))
    return False


def _known_reader_due(request: ConsentRequest) -> bool:
    # The caller made the state change; only a bounced or complained address (which
    # may have been suppressed since) stops the email.
    subscriber = Subscriber.objects.filter(pk=request.subscriber_id).first()
    return subscriber is not None and not Suppression.objects.of_address(subscriber.email_hmac).exclude(
        reason=Suppression.Reason.ERASED).exists()


def _lock_or_create(request: ConsentRequest) -> Subscriber:
    # INSERT ... ON CONFLICT DO NOTHING, then lock: two concurrent signups of one
    # address meet at the unique constraint and both end up holding the same row.
    Subscriber.objects.bulk_create(
        [Subscriber(email=request.email, email_hmac=request.email_hmac, source=request.source,
                    time_zone=request.time_zone)],
        ignore_conflicts=True,
    )
    return Subscriber.objects.select_for_update().get(pk=subscriber_id_for(request.email))


def subscriber_id_for(email: str) -> int | None:
    """Look an address up case-insensitively through the unique LOWER(email) index."""
    return (
        Subscriber.objects.alias(email_lower=Lower("email"))
        .filter(email_lower=Lower(Value(email))).values_list("pk", flat=True).first()
    )


def _meta_of(request: ConsentRequest) -> RequestMeta:
    # Already reduced as CONSENT_NETWORK_DATA says when the request was stored.
    return RequestMeta(ip=request.ip_address, user_agent=request.user_agent)


def _record(request: ConsentRequest, subscriber: Subscriber, action: str, *,
            source: str | None = None, meta: RequestMeta | None = None) -> None:
    """Consent events for each purpose of the request, pointing at the texts the reader
    was shown when they asked."""
    for purpose, shown in ((Purpose.ALERTS, request.wording), (Purpose.MARKETING, request.marketing_wording)):
        if purpose in request.purposes:
            record_consent(subscriber=subscriber, purpose=purpose, action=action,
                           source=source or request.source, meta=meta or _meta_of(request),
                           shown=shown, privacy_notice=request.privacy_notice)


class ConfirmOutcome(enum.Enum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class ConfirmResult:
    outcome: ConfirmOutcome
    request_id: int | None = None
    purposes: tuple[str, ...] = ()


def consent_request_confirm(*, token: str, meta: RequestMeta) -> ConfirmResult:
    """Confirm the request a confirmation link names, and only what it asked for.

    Safe to repeat: a confirmed request reports ALREADY_CONFIRMED and changes nothing.
    A request the reader has since overtaken (unsubscribed, or withdrew marketing,
    after asking) or whose links were revoked is INVALID."""
    try:
        claim = confirm_tokens.read(token)
    except TokenExpired as expired:
        return ConfirmResult(ConfirmOutcome.EXPIRED, expired.subject_id)
    except TokenInvalid:
        return ConfirmResult(ConfirmOutcome.INVALID)
    with transaction.atomic():
        request = ConsentRequest.objects.select_for_update().filter(pk=claim.subject_id).first()
        subscriber = (Subscriber.objects.select_for_update().filter(pk=request.subscriber_id).first()
                      if request is not None and request.subscriber_id else None)
        if subscriber is None or not subscriber.accepts_link(claim.issued_at):
            return ConfirmResult(ConfirmOutcome.INVALID)
        if request.confirmed_at is not None:
            return ConfirmResult(ConfirmOutcome.ALREADY_CONFIRMED, request.pk, tuple(request.purposes))
        if _overtaken(request, subscriber):
            return ConfirmResult(ConfirmOutcome.INVALID)
        granted = _grant(request, subscriber, source=Source.EMAIL_LINK, meta=meta)
    outcome = ConfirmOutcome.CONFIRMED if granted else ConfirmOutcome.ALREADY_CONFIRMED
    return ConfirmResult(outcome, request.pk, tuple(request.purposes))


def _overtaken(request: ConsentRequest, subscriber: Subscriber) -> bool:
    """Whether the reader acted after asking in a way this confirmation must not undo."""
    if request.alerts and subscriber.unsubscribed_at and subscriber.unsubscribed_at > request.created_at \
            and subscriber.status == Subscriber.Status.UNSUBSCRIBED:
        return True
    return request.marketing and subscriber.consent_events.filter(
        purpose=Purpose.MARKETING, action=Action.WITHDRAWN, created_at__gt=request.created_at).exists()


def _grant(request: ConsentRequest, subscriber: Subscriber, *, source: str, meta: RequestMeta) -> bool:
    """Give what the request asked for and record it; True if anything changed."""
    changed = []
    if request.alerts and subscriber.status != Subscriber.Status.CONFIRMED:
        subscriber.mark_confirmed()
        changed.append(Purpose.ALERTS)
        lift_erasure(subscriber.email_hmac)
    if request.marketing and not subscriber.marketing_consent:
        subscriber.marketing_consent = True
        changed.append(Purpose.MARKETING)
    subscriber.save(update_fields=["status", "confirmed_at", "unsubscribed_at", "marketing_consent"])
    for purpose, shown in ((Purpose.ALERTS, request.wording), (Purpose.MARKETING, request.marketing_wording)):
        if purpose in changed:
            record_consent(subscriber=subscriber, purpose=purpose, action=Action.CONFIRMED, source=source,
                           meta=meta, shown=shown, privacy_notice=request.privacy_notice)
    if Purpose.ALERTS in changed:
        webhook_emit(Event.SUBSCRIBER_CONFIRMED, subscriber_data(subscriber))
    request.confirmed_at = timezone.now()
    request.save(update_fields=["confirmed_at"])
    return bool(changed)


def consent_request_purposes(*, token: str) -> tuple[str, ...]:
    """What a confirmation link would confirm, for the page that asks (empty if the
    link is forged). Reads nothing else about the reader."""
    try:
        claim = confirm_tokens.read_ignoring_age(token)
    except TokenInvalid:
        return ()
    request = ConsentRequest.objects.filter(pk=claim.subject_id).only("alerts", "marketing").first()
    return tuple(request.purposes) if request else ()


def consent_request_resend(*, token: str) -> None:
    """From an expired confirmation link: queue its request's email again, if the
    request is still waiting (the cooldown applies in the task, so this is safe to
    expose). A forged link does nothing."""
    try:
        claim = confirm_tokens.read_ignoring_age(token)
    except TokenInvalid:
        return
    if ConsentRequest.objects.filter(pk=claim.subject_id, confirmed_at__isnull=True,
                                     subscriber__isnull=False).exists():
        enqueue("alerts.send_request_confirmation", request_id=claim.subject_id)


def _waiting() -> QuerySet[ConsentRequest]:
    return ConsentRequest.objects.filter(confirmed_at__isnull=True, subscriber__isnull=False)


def confirmation_send(*, subscriber_id: int) -> bool:
    """For `alerts.send_confirmation` messages queued before requests existed: send the
    confirmation of the subscriber's latest waiting request. Returns whether sent."""
    request = _waiting().filter(subscriber_id=subscriber_id).order_by("-created_at", "-id").first()
    return False if request is None else _send_confirmation(request)


def request_confirmation_send(*, request_id: int) -> bool:
    """Send a waiting request's confirmation email again, outside its cooldown.
    Returns whether an email was sent."""
    request = _waiting().filter(pk=request_id).first()
    return False if request is None else _send_confirmation(request)


def _send_confirmation(request: ConsentRequest) -> bool:
    subscriber = Subscriber.objects.filter(pk=request.subscriber_id).first()
    if subscriber is None:
        return False
    kind = "signup" if request.alerts else "marketing"
    if not allow_confirmation_email(subscriber.email_hmac, kind=kind):
        logger.info("Confirmation of request %s held back by the cooldown", request.pk)
        return False
    confirmation_message(request, subscriber).send()
    return True
