"""The suppression list: addresses we must not mail (bounced, complained, erased, or
added by staff), kept by keyed hash so an entry outlives the subscriber's erasure."""

from __future__ import annotations

import logging

from django.utils import timezone

from ..models import Suppression
from .addresses import email_hmac
from .outbox import Event, webhook_emit

logger = logging.getLogger(__name__)


def active_suppression(email: str) -> Suppression | None:
    """The suppression in force for a normalised address, if any."""
    return Suppression.objects.of_address(email_hmac(email)).first()


def suppression_add(*, email_hmac: str, reason: str, event_id: str = "", detail: str = "") -> bool:
    """Suppress an address (by keyed hash). Returns False if it already had an active
    suppression, which is kept: the first reason is the one that counts."""
    if Suppression.objects.of_address(email_hmac).exists():
        return False
    # ON CONFLICT DO NOTHING against the one-active-per-address index: a concurrent
    # insert for the same address is not an error.
    created = Suppression.objects.bulk_create(
        [Suppression(email_hmac=email_hmac, reason=reason, event_id=event_id[:200],
                     detail=detail[:400])],
        ignore_conflicts=True,
    )
    logger.info("Suppressed an address (%s, event %s)", reason, event_id or "-")
    if created:
        # Only the keyed hash: the address may be unknown here, or erased.
        webhook_emit(Event.SUBSCRIBER_SUPPRESSED, {"email_hmac": email_hmac, "reason": reason})
    return bool(created)


def suppression_lift(*, suppression_id: int, user, reason: str) -> bool:
    """Lift an active suppression, recording who and why (the reason is required).
    Returns False if it was not active. Raises ValueError for a blank reason."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("A reason is required to lift a suppression.")
    lifted = Suppression.objects.active().filter(pk=suppression_id).update(
        lifted_at=timezone.now(), lifted_by=user, lift_reason=reason[:400],
    )
    if lifted:
        logger.info("Suppression %s lifted by user %s", suppression_id, getattr(user, "pk", None))
    return lifted == 1


def lift_erasure(email_hmac: str) -> None:
    """A fresh double opt-in is what lifts an erasure suppression (and only that kind)."""
    Suppression.objects.of_address(email_hmac).filter(reason=Suppression.Reason.ERASED).update(
        lifted_at=timezone.now(), lift_reason="Signed up again and confirmed")
