"""What the editor watches: an alert's live progress, from its batches, and its
engagement figures, from its delivery ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from ..models import Alert, Batch, Delivery
from ..sending.batches import SET_ASIDE

S = Delivery.Status

# A delivery row keeps only its latest state, so each figure counts the rows that got
# at least that far: a reader who opened and then clicked is counted in both.
REACHED = {
    "delivered": [S.DELIVERED, S.OPENED, S.CLICKED, S.UNSUBSCRIBED, S.COMPLAINED],
    "opened": [S.OPENED, S.CLICKED],
    "clicked": [S.CLICKED],
    "bounced": [S.BOUNCED],
    "complained": [S.COMPLAINED],
    "unsubscribed": [S.UNSUBSCRIBED],
}

@dataclass(frozen=True)
class Progress:
    status: str
    audience: int
    sent: int
    failed: int
    skipped: int
    remaining: int
    batches: int
    batches_open: int
    batches_failed: int
    rate_per_s: float
    eta_s: float | None
    first_handoff_s: float | None
    last_handoff_s: float | None
    # While the provider fails: since when the first waiting batch has waited, and
    # when the next try is due (None when nothing waits).
    waiting_since: datetime | None = None
    next_attempt_at: datetime | None = None
    batches_set_aside: int = 0  # dead letters: batches that kept killing their worker
    maybe_twice: int = 0  # readers sent again after a call timed out once it was sent
    # Failover: readers sent by each provider ({"Mailgun": 30000, "SendGrid": 70000}),
    # and when the alert went over to the fallback (None if it did not).
    sent_by_provider: dict[str, int] = field(default_factory=dict)
    failover_at: datetime | None = None

    @property
    def failover(self) -> str:
        """"at 12:03:20 UTC" once the alert went over to the fallback provider, else ""."""
        return f"at {self.failover_at:%H:%M:%S} UTC" if self.failover_at else ""

    @property
    def sent_by(self) -> str:
        """"Mailgun 30,000 · SendGrid 70,000", largest first; "" before anything is sent."""
        ordered = sorted(self.sent_by_provider.items(), key=lambda item: (-item[1], item[0]))
        return " · ".join(f"{name} {count:,}" for name, count in ordered)

    @property
    def waiting(self) -> str:
        """"since 12:03:10 UTC, next try at 12:05:02 UTC" while the provider fails, else ""."""
        if self.waiting_since is None:
            return ""
        text = f"since {self.waiting_since:%H:%M:%S} UTC"
        if self.next_attempt_at is not None:
            text += f", next try at {self.next_attempt_at:%H:%M:%S} UTC"
        return text

    def as_dict(self) -> dict:
        return {**asdict(self), "waiting": self.waiting, "sent_by": self.sent_by, "failover": self.failover}


def alert_progress(alert: Alert) -> Progress:
    """Live numbers for the editor, from one aggregate over the alert's batches."""
    totals = Batch.objects.filter(alert=alert).aggregate(
        planned=Sum("planned_count"), sent=Sum("sent_count"), failed=Sum("failed_count"),
        skipped=Sum("skipped_count"), batches=Count("pk"),
        open=Count("pk", filter=Q(status__in=[Batch.Status.PENDING, Batch.Status.SENDING])),
        open_planned=Sum("planned_count", filter=Q(status__in=[Batch.Status.PENDING, Batch.Status.SENDING])),
        dead=Count("pk", filter=Q(status=Batch.Status.FAILED)),
        set_aside=Count("pk", filter=Q(status=Batch.Status.FAILED, last_error__startswith=SET_ASIDE)),
        waiting_from=Min("waiting_since", filter=Q(status=Batch.Status.PENDING)),
        next_try=Min("next_attempt_at", filter=Q(status=Batch.Status.PENDING, waiting_since__isnull=False)),
        resent=Sum("sent_count", filter=Q(timeouts_after_send__gt=0)),
    )
    sent, failed = totals["sent"] or 0, totals["failed"] or 0
    remaining = totals["open_planned"] or 0
    elapsed = _seconds(alert.published_at, timezone.now()) if alert.published_at else None
    rate = sent / elapsed if elapsed and sent else 0.0
    return Progress(
        status=alert.status, audience=alert.audience_size or (totals["planned"] or 0),
        sent=sent, failed=failed, skipped=totals["skipped"] or 0, remaining=remaining,
        batches=totals["batches"], batches_open=totals["open"], batches_failed=totals["dead"],
        rate_per_s=round(rate, 1), eta_s=round(remaining / rate, 1) if rate and remaining else None,
        first_handoff_s=_seconds(alert.published_at, alert.first_handoff_at),
        last_handoff_s=_seconds(alert.published_at, alert.last_handoff_at),
        waiting_since=totals["waiting_from"], next_attempt_at=totals["next_try"],
        batches_set_aside=totals["set_aside"], maybe_twice=totals["resent"] or 0,
        sent_by_provider=sent_by_provider(alert), failover_at=alert.failover_at,
    )


def sent_by_provider(alert: Alert) -> dict[str, int]:
    """Readers handed over by each provider, from the batches (each is sent by one)."""
    rows = (Batch.objects.filter(alert=alert, sent_count__gt=0).exclude(provider="")
            .values("provider").annotate(n=Sum("sent_count")).order_by())
    return {row["provider"]: row["n"] for row in rows}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


# Gmail and Yahoo want spam complaints under 0.1% of delivered mail (never 0.3%).
COMPLAINT_RATE_LIMIT = 0.001


def alert_engagement(alert: Alert) -> dict:
    """Counts and rates of delivered, bounced, complained, opened, clicked and
    unsubscribed for one alert, plus `complaint_rate_warning` when complaints exceed
    0.1% of delivered. Bounces are a share of everything sent, the rest a share of
    what was delivered (0.0 while nothing is)."""
    aggregates = {name: Count("id", filter=Q(status__in=statuses)) for name, statuses in REACHED.items()}
    counts = Delivery.objects.filter(alert=alert).aggregate(sent=Count("id"), **aggregates)
    sent, delivered = counts["sent"], counts["delivered"]
    rates = {f"{name}_rate": _share(counts[name], delivered) for name in REACHED if name != "bounced"}
    rates["bounced_rate"] = _share(counts["bounced"], sent)
    return {**counts, **rates,
            "complaint_rate_warning": rates["complained_rate"] > COMPLAINT_RATE_LIMIT}


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
