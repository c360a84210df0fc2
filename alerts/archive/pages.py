"""What the public archive shows: alerts that have gone out to readers, never a draft,
a scheduled alert, one that was stopped or one that failed to reach anyone.

An alert is public from the moment it is published (its readers' emails link here
while it is still sending) unless it is stopped; PUBLIC_ARCHIVE turns the whole archive
off."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import Http404

from ..models import Alert

# Alerts readers have in their inboxes. A stopped alert reached some of them, but the
# newsroom stopped it for a reason: it stays out of the archive.
PUBLIC = (Alert.Status.SENDING, Alert.Status.SENT)
FEED_LENGTH = 50
PAGE_SIZE = 20


def require_archive() -> None:
    """404 unless the archive is on: off, its pages do not exist."""
    if not settings.PUBLIC_ARCHIVE:
        raise Http404("The archive is off.")


def public_alerts() -> QuerySet[Alert]:
    """Every public alert, newest first: corrections and updates among them, those of
    a public alert only (a correction of a stopped alert would point at nothing)."""
    return (Alert.objects.filter(status__in=PUBLIC, published_at__isnull=False)
            .filter(Q(follow_up_of__isnull=True) | Q(follow_up_of__status__in=PUBLIC))
            .select_related("follow_up_of").order_by("-published_at", "-pk"))


def public_alert(pk: int) -> Alert:
    """One public alert, or Http404."""
    alert = public_alerts().filter(pk=pk).first()
    if alert is None:
        raise Http404("No such alert.")
    return alert


def follow_ups_of(alert: Alert) -> list[Alert]:
    """The public corrections and updates of an alert, oldest first."""
    return list(alert.follow_ups.filter(status__in=PUBLIC, published_at__isnull=False).order_by("published_at"))


def headline_with_kind(alert: Alert) -> str:
    """The headline as its email's subject reads: "Correction: ..." for a correction."""
    prefix = {Alert.Kind.CORRECTION: "Correction: ", Alert.Kind.UPDATE: "Update: "}.get(alert.kind, "")
    return f"{prefix}{alert.headline}"
