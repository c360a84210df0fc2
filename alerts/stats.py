"""Engagement figures for an alert, from its delivery ledger."""

from __future__ import annotations

from django.db.models import Count, Q

from .models import Alert, Delivery

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
