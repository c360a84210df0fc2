"""Writes that matter: signing up, confirming, changing consent.

Each service runs in one transaction, records consent evidence alongside the state
change, and enqueues its email only after the commit.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Lower
from django.utils import timezone

from . import wording
from .addresses import email_hmac
from .models import ConsentEvent, Subscriber, Suppression, Topic, Wording
from .tokens import TokenExpired, TokenInvalid, confirm_tokens

logger = logging.getLogger(__name__)

Source = ConsentEvent.Source
Purpose = ConsentEvent.Purpose
Action = ConsentEvent.Action


@dataclass(frozen=True)
class RequestMeta:
    """Where a consent action came from; stored according to CONSENT_NETWORK_DATA."""

    ip: str | None = None
    user_agent: str = ""

    def stored_ip(self) -> str | None:
        if settings.CONSENT_NETWORK_DATA == "none" or not self.ip:
            return None
        try:
            address = ipaddress.ip_address(self.ip)
        except ValueError:
            return None
        if settings.CONSENT_NETWORK_DATA == "truncated":
            prefix = 24 if address.version == 4 else 48
            return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
        return str(address)

    def stored_user_agent(self) -> str:
        if settings.CONSENT_NETWORK_DATA == "none":
            return ""
        return self.user_agent[:400]


def record_consent(
    *, subscriber: Subscriber, purpose: str, action: str, source: str,
    meta: RequestMeta, note: str = "",
) -> ConsentEvent:
    """Append one consent event with the wording and privacy notice now in force."""
    kind = Wording.Kind.MARKETING if purpose == Purpose.MARKETING else Wording.Kind.ALERTS
    return ConsentEvent.objects.create(
        subscriber=subscriber,
        purpose=purpose,
        action=action,
        source=source,
        wording=wording.current(kind),
        privacy_notice=wording.current(Wording.Kind.PRIVACY),
        ip_address=meta.stored_ip(),
        user_agent=meta.stored_user_agent(),
        note=note,
    )


def active_suppression(email: str) -> Suppression | None:
    return Suppression.objects.filter(email_hmac=email_hmac(email), lifted_at__isnull=True).first()


def subscriber_subscribe(
    *, email: str, marketing: bool, source: str, meta: RequestMeta,
    timezone_name: str = "", topic_ids: list[int] | None = None,
) -> None:
    """Sign an address up. Returns nothing on purpose: the caller must answer every
    address the same way, whatever its state, so nobody can learn who is subscribed.

    `email` must already be normalised (addresses.normalize_email).
    """
    suppression = active_suppression(email)
    if suppression and suppression.reason != Suppression.Reason.ERASED:
        # Bounced or complained: never mail it again from a form anyone can fill in.
        logger.info("Signup for a suppressed address ignored (%s)", suppression.reason)
        return
    with transaction.atomic():
        subscriber = _lock_or_create(email=email, source=source, timezone_name=timezone_name)
        if subscriber.status == Subscriber.Status.CONFIRMED:
            return
        if subscriber.status == Subscriber.Status.UNSUBSCRIBED:
            # Coming back: a fresh double opt-in, and older links stop working.
            subscriber.status = Subscriber.Status.PENDING
            subscriber.created_at = timezone.now()
            subscriber.save(update_fields=["status", "created_at"])
        if topic_ids:
            subscriber.topics.set(Topic.objects.filter(id__in=topic_ids))
        record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.REQUESTED,
                       source=source, meta=meta)
        if marketing:
            record_consent(subscriber=subscriber, purpose=Purpose.MARKETING, action=Action.GIVEN,
                           source=source, meta=meta)
        if settings.DOUBLE_OPT_IN or suppression:
            from .tasks import send_confirmation

            send_confirmation.delay_on_commit(subscriber_id=subscriber.pk)
        else:
            _confirm(subscriber, source=source, meta=meta, marketing=marketing)


def _lock_or_create(*, email: str, source: str, timezone_name: str) -> Subscriber:
    # INSERT ... ON CONFLICT DO NOTHING, then lock: two concurrent signups of one
    # address meet at the unique constraint and both end up holding the same row.
    Subscriber.objects.bulk_create(
        [Subscriber(email=email, email_hmac=email_hmac(email), source=source,
                    time_zone=timezone_name[:64])],
        ignore_conflicts=True,
    )
    return Subscriber.objects.select_for_update().get(pk=subscriber_id_for(email))


def subscriber_id_for(email: str) -> int | None:
    """Look an address up case-insensitively through the unique LOWER(email) index."""
    return (
        Subscriber.objects.alias(email_lower=Lower("email"))
        .filter(email_lower=email.lower()).values_list("pk", flat=True).first()
    )


class ConfirmOutcome(enum.Enum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class ConfirmResult:
    outcome: ConfirmOutcome
    subscriber_id: int | None = None


def subscriber_confirm(*, token: str, meta: RequestMeta) -> ConfirmResult:
    """Confirm the subscription a confirmation link names. Safe to repeat: a second
    confirmation of the same address reports ALREADY_CONFIRMED and changes nothing."""
    try:
        claim = confirm_tokens.read(token)
    except TokenExpired as expired:
        return ConfirmResult(ConfirmOutcome.EXPIRED, expired.subscriber_id)
    except TokenInvalid:
        return ConfirmResult(ConfirmOutcome.INVALID)
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().filter(pk=claim.subscriber_id).first()
        if subscriber is None:
            return ConfirmResult(ConfirmOutcome.INVALID)
        if subscriber.status == Subscriber.Status.CONFIRMED:
            return ConfirmResult(ConfirmOutcome.ALREADY_CONFIRMED, subscriber.pk)
        if not confirm_tokens.matches(subscriber, claim):
            return ConfirmResult(ConfirmOutcome.INVALID)
        marketing = _marketing_requested(subscriber)
        _confirm(subscriber, source=Source.EMAIL_LINK, meta=meta, marketing=marketing)
    return ConfirmResult(ConfirmOutcome.CONFIRMED, subscriber.pk)


def _marketing_requested(subscriber: Subscriber) -> bool:
    last = (
        subscriber.consent_events.filter(purpose=Purpose.MARKETING)
        .order_by("-created_at", "-id").values_list("action", flat=True).first()
    )
    return last == Action.GIVEN


def _confirm(subscriber: Subscriber, *, source: str, meta: RequestMeta, marketing: bool) -> None:
    subscriber.mark_confirmed()
    subscriber.marketing_consent = marketing
    subscriber.save(update_fields=["status", "confirmed_at", "unsubscribed_at", "marketing_consent"])
    record_consent(subscriber=subscriber, purpose=Purpose.ALERTS, action=Action.CONFIRMED,
                   source=source, meta=meta)
    if marketing:
        record_consent(subscriber=subscriber, purpose=Purpose.MARKETING, action=Action.CONFIRMED,
                       source=source, meta=meta)
    # A fresh double opt-in is what lifts an erasure suppression (and only that kind).
    Suppression.objects.filter(
        email_hmac=subscriber.email_hmac, lifted_at__isnull=True, reason=Suppression.Reason.ERASED
    ).update(lifted_at=timezone.now(), lift_reason="Signed up again and confirmed")


def subscriber_resend_confirmation(*, subscriber_id: int) -> None:
    """Queue a fresh confirmation email for a still-pending subscriber (cooldown applies
    in the task, so this is safe to expose behind an expired link)."""
    from .tasks import send_confirmation

    if Subscriber.objects.filter(pk=subscriber_id, status=Subscriber.Status.PENDING).exists():
        send_confirmation.delay(subscriber_id=subscriber_id)


def subscriber_confirm_token_owner(*, token: str) -> int | None:
    """Whose confirmation token this is, even if it has expired (None if forged)."""
    try:
        return confirm_tokens.read(token).subscriber_id
    except TokenExpired as expired:
        return expired.subscriber_id
    except TokenInvalid:
        return None
