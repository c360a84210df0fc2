"""Corrections and updates: a follow-up alert to exactly the readers who received the
original, threaded under it in their mail apps.

A follow-up is an Alert of its own (`kind` correction or update, `follow_up_of` the
original), published like any other: the same fan-out, batches, ledger and progress.
Only its audience differs (`audience.recipients_of`: the original's ledger, minus the
readers who unsubscribed or were suppressed since), and each copy carries
`In-Reply-To` and `References` naming the copy of the original that reader got, so
mail apps file it in the same conversation.

The ledger is the only record of who received an alert, and the nightly purge deletes
it after DELIVERY_RETENTION_DAYS: past that, an alert can no longer be followed up.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.conf import settings
from django.db import transaction

from ..models import Alert, Batch, Delivery
from . import services
from .audience import recipients_of

logger = logging.getLogger(__name__)

KINDS = (Alert.Kind.CORRECTION, Alert.Kind.UPDATE)
# An alert stopped or failed part-way reached some readers: they need the correction too.
FOLLOWABLE = (Alert.Status.SENT, Alert.Status.FAILED, Alert.Status.CANCELLED)


class FollowUpRefused(Exception):
    """Why this alert cannot be followed up (a sentence for the editor)."""


def follow_up_refusal(original: Alert) -> str | None:
    """None if `original` can be corrected or updated now, else the reason it cannot."""
    if original.kind != Alert.Kind.NORMAL:
        return "Corrections and updates go out for the original alert, not for another follow-up."
    if original.status not in FOLLOWABLE:
        return "Only an alert that has been sent can be corrected or updated."
    if Batch.objects.filter(alert_id=original.pk, purged_at__isnull=False).exists():
        return (f"The record of who received this alert has been deleted (it is kept for "
                f"{settings.DELIVERY_RETENTION_DAYS} days), so a follow-up can no longer reach them.")
    return None


def follow_up_audience_count(original: Alert) -> int:
    """How many readers a follow-up of `original` would reach if sent now."""
    return recipients_of(original.pk).unsuppressed().count()


def send_follow_up(original: Alert, *, kind: str, headline: str, standfirst: str = "", body: str = "",
                   url: str = "", by=None) -> Alert:
    """Write a correction or update of `original` and publish it at once to the readers
    who received the original. Returns the new alert: sending, or a draft waiting for a
    second editor's approval where APPROVAL_REQUIRED_ABOVE asks for one. Raises FollowUpRefused (with the
    reason) if the original cannot be followed up, ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"A follow-up is a correction or an update, not {kind!r}.")
    refusal = follow_up_refusal(original)
    if refusal:
        raise FollowUpRefused(refusal)
    with transaction.atomic():
        follow_up = Alert.objects.create(
            kind=kind, follow_up_of=original, headline=headline, standfirst=standfirst, body=body,
            url=url or original.url, author=by)
        follow_up.topics.set(original.topics.all())
        # Past APPROVAL_REQUIRED_ABOVE it waits, a draft, for a second editor.
        if not services.approval_required(follow_up):
            services.alert_publish(alert_id=follow_up.pk, user=by)
    logger.info("Alert %s: %s %s sent by user %s", original.pk, kind, follow_up.pk, getattr(by, "pk", None))
    follow_up.refresh_from_db()
    return follow_up


def thread_headers(message_id: str) -> dict[str, str]:
    """The headers that file a message under `message_id` in mail apps (RFC 5322
    In-Reply-To and References); none if the original's id is unknown."""
    if not message_id:
        return {}
    message_id = message_id if message_id.startswith("<") else f"<{message_id}>"
    return {"In-Reply-To": message_id, "References": message_id}


def by_original_message(original_id: int, readers: list[tuple[int, str]]
                        ) -> list[tuple[str, list[tuple[int, str]]]]:
    """Readers grouped by the Message-ID of the copy of the original each received
    (the batch's one id where the provider sent the batch as one call, else their own),
    in one query: a follow-up batch makes one provider call per group."""
    if not readers:
        return []
    # By the readers' id range (one scan of the unique (alert, subscriber) index), and
    # the batches' ids apart: a join or a list of a thousand ids plans worse.
    ids = [sid for sid, _ in readers]
    rows = list(Delivery.objects.filter(alert_id=original_id, subscriber_id__gte=min(ids),
                                        subscriber_id__lte=max(ids))
                .values_list("subscriber_id", "message_id", "batch_id"))
    shared = dict(Batch.objects.filter(pk__in={batch for _, own, batch in rows if not own})
                  .values_list("pk", "message_id"))
    message_of = {sid: own or shared.get(batch, "") for sid, own, batch in rows}
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for reader in readers:
        groups[message_of.get(reader[0], "")].append(reader)
    return list(groups.items())

