"""The editor's actions on an alert: publish, schedule, unschedule, stop, send a test."""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from ..common.queueing import enqueue_on_commit
from ..common.tokens import link_tokens
from ..emails import alert_message
from ..models import Alert, Batch, Topic
from .audience import audience_count
from .events import Event, alert_emit

logger = logging.getLogger(__name__)


class ApprovalRequired(Exception):
    """The alert would reach more readers than APPROVAL_REQUIRED_ABOVE and no editor
    but its author has approved it."""


class ApprovalRefused(Exception):
    """This approval cannot be given (the author's own, or an alert already sent)."""


def approval_required(alert: Alert) -> bool:
    """Whether `alert` needs a second editor's approval before it goes: its audience
    now exceeds APPROVAL_REQUIRED_ABOVE (0: never). Counted only when the setting is on."""
    limit = settings.APPROVAL_REQUIRED_ABOVE
    return bool(limit) and audience_count(alert) > limit


def _check_approval(alert_id: int) -> None:
    alert = Alert.objects.get(pk=alert_id)
    if alert.status == Alert.Status.DRAFT and alert.approved_at is None and approval_required(alert):
        raise ApprovalRequired(
            f"This alert would reach more than {settings.APPROVAL_REQUIRED_ABOVE} readers: another editor "
            "needs to approve it first.")


def alert_approve(*, alert_id: int, user) -> bool:
    """A second editor approves the alert as it now reads. Returns False if it was
    already approved. Raises ApprovalRefused for its author, or once it has gone."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if alert.status not in (Alert.Status.DRAFT, Alert.Status.SCHEDULED):
            raise ApprovalRefused("This alert has already gone out.")
        if alert.author_id is not None and alert.author_id == user.pk:
            raise ApprovalRefused("An alert needs a second pair of eyes: its author cannot approve it.")
        if alert.approved_at is not None:
            return False
        Alert.objects.filter(pk=alert_id).update(approved_by=user, approved_at=Now())
    logger.info("Alert %s approved by user %s", alert_id, user.pk)
    return True


class UnknownTopics(ValueError):
    """Some topic slugs name no topic; `slugs` lists them."""

    def __init__(self, slugs: list[str]) -> None:
        self.slugs = slugs
        super().__init__(f"Unknown topic(s): {', '.join(slugs)}")


def topics_by_slug(slugs: Sequence[str]) -> list[Topic]:
    """The topics these slugs name, in the order given; raises UnknownTopics naming
    every slug that names none (so a typo in a CMS never files an alert nowhere)."""
    wanted = list(dict.fromkeys(slugs))
    found = {topic.slug: topic for topic in Topic.objects.filter(slug__in=wanted)}
    missing = [slug for slug in wanted if slug not in found]
    if missing:
        raise UnknownTopics(missing)
    return [found[slug] for slug in wanted]


def alert_create(*, headline: str, standfirst: str = "", body: str = "", url: str = "",
                 image_url: str = "", image_alt: str = "", topics: Sequence[Topic] = (),
                 user=None) -> Alert:
    """Write a draft, as an editor's Add form does; publishing or scheduling it is a
    separate step (alert_publish, alert_schedule), which the caller may take in the same
    transaction to create and send in one go."""
    with transaction.atomic():
        alert = Alert.objects.create(headline=headline, standfirst=standfirst, body=body, url=url,
                                     image_url=image_url, image_alt=image_alt, author=user)
        alert.topics.set(topics)
    logger.info("Alert %s created", alert.pk)
    return alert


def alert_publish(*, alert_id: int, user=None) -> bool:
    """Start sending now. Returns False if the alert was already published (a double
    click, two editors at once, a retried request): it is published once. Raises
    ApprovalRequired for a draft that needs a second editor's approval and has none (a
    scheduled alert had its approval checked when it was scheduled)."""
    _check_approval(alert_id)
    with transaction.atomic():
        started = Alert.objects.filter(
            pk=alert_id, status__in=[Alert.Status.DRAFT, Alert.Status.SCHEDULED]
        ).update(status=Alert.Status.SENDING, published_at=Now(), published_by=user)
        if started:
            enqueue_on_commit("alerts.fan_out_alert", alert_id=alert_id)
            alert_emit(Event.ALERT_PUBLISHED, alert_id)
    if started:
        logger.info("Alert %s published", alert_id)
    return bool(started)


def alert_schedule(*, alert_id: int, when: datetime, user=None) -> bool:
    """Publish at an embargo time (picked up by the sweeper within seconds of it).
    Raises ApprovalRequired as alert_publish does: the sweeper then sends it as it is."""
    _check_approval(alert_id)
    return bool(Alert.objects.filter(
        pk=alert_id, status__in=[Alert.Status.DRAFT, Alert.Status.SCHEDULED]
    ).update(status=Alert.Status.SCHEDULED, scheduled_for=when, published_by=user))


class EditOutcome(enum.Enum):
    SAVED = "saved"
    RETURNED_TO_DRAFT = "returned_to_draft"
    REFUSED = "refused"


# What an editor's form may change; status and schedule change only through the
# actions above.
EDITABLE_FIELDS = ["headline", "standfirst", "body", "url", "image_url", "image_alt"]


def alert_save_edit(*, alert: Alert, user) -> EditOutcome:
    """Save an editor's changes to an alert's text, deciding on the row as it is now
    (locked), not as it was when the form was loaded:

    - a draft is saved;
    - a scheduled alert is saved as it stays scheduled only for a user with the publish
      permission; anyone else's change returns it to draft, so the sweeper never
      publishes text no publisher approved;
    - an alert already sending, sent, stopped or failed is REFUSED and nothing saved."""
    with transaction.atomic():
        current = Alert.objects.select_for_update().get(pk=alert.pk)
        if current.status not in (Alert.Status.DRAFT, Alert.Status.SCHEDULED):
            return EditOutcome.REFUSED
        outcome = EditOutcome.SAVED
        fields = [*EDITABLE_FIELDS, "updated_at"]
        if current.approved_at and any(getattr(current, f) != getattr(alert, f) for f in EDITABLE_FIELDS):
            # The approval was of the text as it was: changed, it needs approving again,
            # and a scheduled alert must not go out unapproved meanwhile.
            alert.approved_by, alert.approved_at = None, None
            fields += ["approved_by", "approved_at"]
            if current.status == Alert.Status.SCHEDULED and settings.APPROVAL_REQUIRED_ABOVE:
                alert.status, alert.scheduled_for = Alert.Status.DRAFT, None
                fields += ["status", "scheduled_for"]
                outcome = EditOutcome.RETURNED_TO_DRAFT
        if current.status == Alert.Status.SCHEDULED and not user.has_perm("alerts.publish_alert"):
            alert.status, alert.scheduled_for = Alert.Status.DRAFT, None
            fields += ["status", "scheduled_for"]
            outcome = EditOutcome.RETURNED_TO_DRAFT
            logger.info("Alert %s edited by user %s without the publish permission: back to draft",
                        alert.pk, user.pk)
        alert.save(update_fields=fields)
    return outcome


def alert_unschedule(*, alert_id: int) -> bool:
    return bool(Alert.objects.filter(pk=alert_id, status=Alert.Status.SCHEDULED)
                .update(status=Alert.Status.DRAFT, scheduled_for=None))


def alert_stop(*, alert_id: int) -> bool:
    """Stop sending: batches not yet claimed are cancelled; the few in flight finish."""
    with transaction.atomic():
        stopped = Alert.objects.filter(
            pk=alert_id, status__in=[Alert.Status.SENDING, Alert.Status.SCHEDULED]
        ).update(status=Alert.Status.CANCELLED, cancelled_at=timezone.now())
        Batch.objects.filter(alert_id=alert_id, status=Batch.Status.PENDING).update(
            status=Batch.Status.CANCELLED)
        if stopped:
            alert_emit(Event.ALERT_CANCELLED, alert_id)
    return bool(stopped)


def alert_retry_failed(*, alert_id: int) -> int:
    """"Retry failed now": give every failed batch of a sent or failed alert another
    full SEND_GIVE_UP_AFTER_SECONDS, from now, and send it again. Readers already in
    the ledger (a refused recipient, say) are not sent again. Returns how many batches
    were queued; 0 if none had failed (safe to press twice)."""
    window = timedelta(seconds=settings.SEND_GIVE_UP_AFTER_SECONDS)
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(
            pk=alert_id, status__in=[Alert.Status.SENDING, Alert.Status.SENT, Alert.Status.FAILED]).first()
        if alert is None:
            return 0
        failed = Batch.objects.filter(alert_id=alert_id, status=Batch.Status.FAILED)
        ids = list(failed.values_list("pk", flat=True))
        if not ids:
            return 0
        Batch.objects.filter(pk__in=ids).update(
            status=Batch.Status.PENDING, give_up_at=Now() + window, next_attempt_at=None, waiting_since=None,
            takeovers=0, timeouts_after_send=0, lease_expires_at=None, claimed_by="")
        Alert.objects.filter(pk=alert_id).update(status=Alert.Status.SENDING, finished_at=None)
        for batch_id in ids:
            enqueue_on_commit("alerts.send_batch", batch_id=batch_id)
    logger.info("Alert %s: %d failed batches queued again", alert_id, len(ids))
    return len(ids)


def alert_send_test(*, alert_id: int, to: str) -> None:
    """Send the editor one copy exactly as subscribers get it. Its links carry a token
    for no subscriber (id 0), so pressing them changes nobody's subscription."""
    alert = Alert.objects.get(pk=alert_id)
    message = alert_message(alert, to=to, token=link_tokens.make_token(0))
    message.subject = f"[TEST] {message.subject}"
    message.send()
