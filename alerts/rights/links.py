"""Links to download or erase one's data: asked for from the preference centre,
emailed to the address, valid once for DATA_LINK_MAX_AGE.

The preference link travels in every alert, forwarded ones included, so it does not
open the data itself: it can only have a fresh link sent to the subscriber's own
address, which only its owner can read."""

from __future__ import annotations

import logging

from ..common.queueing import enqueue
from ..common.ratelimits import allow_data_link_email
from ..emails import data_link_message
from ..models import Subscriber, Suppression

logger = logging.getLogger(__name__)

PURPOSES = ("export", "erase")


def data_link_request(*, subscriber_id: int, purpose: str) -> None:
    """Queue the email with a download or erasure link. The task decides, behind a
    per-address cooldown, whether anything is sent. Raises ValueError for an unknown
    purpose."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown data link purpose {purpose!r}")
    enqueue("alerts.send_data_link", subscriber_id=subscriber_id, purpose=purpose)


def data_link_send(*, subscriber_id: int, purpose: str) -> bool:
    """Email the link if the subscriber still exists, the address is not suppressed
    for bouncing or complaining, and it is outside its cooldown. Returns whether sent."""
    subscriber = Subscriber.objects.filter(pk=subscriber_id).first()
    if subscriber is None or purpose not in PURPOSES:
        return False
    if Suppression.objects.of_address(subscriber.email_hmac).exclude(reason=Suppression.Reason.ERASED).exists():
        return False
    if not allow_data_link_email(subscriber.email_hmac, purpose):
        logger.info("Data link for subscriber %s held back by the cooldown", subscriber_id)
        return False
    data_link_message(subscriber, purpose).send()
    return True
