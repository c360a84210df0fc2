"""Signing up and confirming: the double opt-in, in two halves.

1. The web request records a `ConsentRequest` in one SQL statement and nudges the
   drain (`signup_request`). It does the same work for every address, new, pending,
   confirmed, unsubscribed or suppressed, so neither the answer nor its timing says
   which it was.
2. A worker drains the requests in batches, runs the state machine and records the
   confirmation emails in the outbox (`drain.py`); the outbox sends them, batched,
   with the per-address cooldown counted as each is sent (`alerts/outbox/`).

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

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..common import wording
from ..common.addresses import email_hmac
from ..common.consent import Action, Purpose, RequestMeta, Source, record_consent
from ..common.outbox import Event, subscriber_data, webhook_emit
from ..common.queueing import nudge_on_commit
from ..common.suppression import lift_erasure
from ..common.tokens import TokenExpired, TokenInvalid, confirm_tokens
from ..models import ConsentRequest, Subscriber, Wording
from ..outbox.services import outbox_confirmations
from . import drain
from .origin import SignupOrigin
from .sql import insert_consent_request

logger = logging.getLogger(__name__)

PROCESS_TASK = "alerts.process_consent_request"  # one request per message (older messages)


DRAIN_TASK = "alerts.drain_consent_requests"
# How long a queued drain waits before it reads (drain.consent_requests_drain): at a
# spike's hundreds of signups a second a drain then takes a few hundred at a time
# instead of a few, and its confirmations go in one provider call; a reader's email
# is that much later, well inside the few seconds a confirmation may take.
DRAIN_GATHER_SECONDS = 0.5


def signup_request(*, email: str, marketing: bool, source: str, meta: RequestMeta,
                   timezone_name: str = "", origin: SignupOrigin | None = None,
                   drain_nudge: bool | None = None) -> int:
    """Record a signup from a form and nudge the drain that processes it. ONE SQL
    statement, whatever we know of the address (no Subscriber is looked up, and the
    texts shown are resolved from a per-process cache), and at most one cheap Redis
    round trip: the caller answers every address alike, and the work it did must not
    tell them apart either.

    The unprocessed request is itself the outbox record of the work to come: the
    drain (signup.drain) runs the state machine and records the confirmation email,
    and the sweeper finds any request whose nudge was lost (Redis down).

    `drain_nudge` is what the view's rate limit did with the nudge key in its round
    trip (ratelimits.per_client_limit): True, queue the drain after the commit; False,
    a drain is queued already; None, nudge now (one more round trip).

    `email` must already be normalised (addresses.normalize_email). Returns the
    request's id (for tests, never for the answer)."""
    request_id = insert_consent_request({
        "email": email, "email_hmac": email_hmac(email), "alerts": True, "marketing": marketing,
        "source": source, "time_zone": timezone_name[:64], "ip_address": meta.stored_ip(),
        "user_agent": meta.stored_user_agent(), "wording_id": wording.current_id(Wording.Kind.ALERTS),
        "marketing_wording_id": wording.current_id(Wording.Kind.MARKETING) if marketing else None,
        "privacy_notice_id": wording.current_id(Wording.Kind.PRIVACY), "created_at": timezone.now(),
        **(origin or SignupOrigin()).fields(),
    })
    nudge_on_commit(DRAIN_TASK, reserved=drain_nudge)
    return request_id


def consent_request_for(*, subscriber: Subscriber, alerts: bool, marketing: bool, source: str,
                        meta: RequestMeta, wording_kind: str | None = None) -> ConsentRequest:
    """Ask a known reader to confirm by email (coming back after unsubscribing, or
    marketing ticked in the preference centre). The caller has already made the state
    change and recorded the request as consent evidence; the drain only records the
    email in the outbox. Call inside the caller's transaction."""
    request = ConsentRequest.objects.create(
        email=subscriber.email, email_hmac=subscriber.email_hmac, subscriber=subscriber,
        alerts=alerts, marketing=marketing, source=source, ip_address=meta.stored_ip(),
        user_agent=meta.stored_user_agent(),
        wording=wording.current(wording_kind or Wording.Kind.ALERTS) if alerts else None,
        marketing_wording=wording.current(Wording.Kind.MARKETING) if marketing else None,
        privacy_notice=wording.current(Wording.Kind.PRIVACY),
    )
    nudge_on_commit(DRAIN_TASK)
    return request


def consent_requests_waiting(*, before: datetime) -> bool:
    """Whether any request committed before `before` is still unprocessed: its nudge
    was lost (Redis down when it committed), or the drain is behind. For the sweeper,
    which then queues one drain; draining twice is harmless."""
    return ConsentRequest.objects.filter(processed_at__isnull=True, created_at__lt=before).exists()


def consent_requests_unqueued(*, before: datetime, limit: int = 10000) -> list[int]:
    """Requests committed but never processed before `before` (see consent_requests_waiting)."""
    return list(ConsentRequest.objects.filter(processed_at__isnull=True, created_at__lt=before)
                .order_by("created_at").values_list("pk", flat=True)[:limit])


def consent_request_process(*, request_id: int) -> bool:
    """Apply one recorded request now (messages queued under the older, one-message-per-
    signup design, and tests): as the drain does, for this request alone. Returns
    whether a confirmation email was recorded in the outbox.

    Safe to run twice: the request is locked and marked processed in the transaction
    that applies it, so a second run finds it done."""
    return drain.consent_requests_apply(request_ids=[request_id]) > 0


def _meta_of(request: ConsentRequest) -> RequestMeta:
    # Already reduced as CONSENT_NETWORK_DATA says when the request was stored.
    return RequestMeta(ip=request.ip_address, user_agent=request.user_agent)


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
    request is still waiting (the cooldown applies where it is sent, so this is safe
    to expose). A forged link does nothing."""
    try:
        claim = confirm_tokens.read_ignoring_age(token)
    except TokenInvalid:
        return
    request = _waiting().filter(pk=claim.subject_id).select_related("subscriber").first()
    if request is not None:
        outbox_confirmations([request])


def _waiting() -> QuerySet[ConsentRequest]:
    return ConsentRequest.objects.filter(confirmed_at__isnull=True, subscriber__isnull=False)


def confirmation_send(*, subscriber_id: int) -> bool:
    """For `alerts.send_confirmation` messages queued before requests existed: queue the
    confirmation of the subscriber's latest waiting request. Returns whether queued."""
    request = _waiting().filter(subscriber_id=subscriber_id).order_by("-created_at", "-id").first()
    return False if request is None else bool(outbox_confirmations([request]))


def request_confirmation_send(*, request_id: int) -> bool:
    """Queue a waiting request's confirmation email again (the cooldown applies where
    it is sent). Returns whether queued."""
    request = _waiting().filter(pk=request_id).first()
    return False if request is None else bool(outbox_confirmations([request]))
