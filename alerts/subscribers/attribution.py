"""Where signups come from: "top articles by signups" for the admin, from the page
each reader signed up on (Subscriber.signup_page, the embedding article or the
Referer) and the campaign tags kept with them."""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from django.db.models import Count, Q
from django.utils import timezone

from ..models import Subscriber


class PageSignups(NamedTuple):
    page: str
    signups: int
    confirmed: int


class SourceSignups(NamedTuple):
    utm_source: str
    utm_medium: str
    utm_campaign: str
    signups: int


def _since(days: int | None):
    readers = Subscriber.objects.all()
    return readers if not days else readers.filter(created_at__gte=timezone.now() - timedelta(days=days))


def top_signup_pages(*, days: int | None = 30, limit: int = 50) -> list[PageSignups]:
    """The pages most readers signed up on in the last `days` (None: ever), most first,
    with how many of them have confirmed. Readers with no page are left out."""
    rows = (_since(days).exclude(signup_page="").values("signup_page")
            .annotate(signups=Count("id"), confirmed=Count("id", filter=Q(confirmed_at__isnull=False)))
            .order_by("-signups", "signup_page")[:limit])
    return [PageSignups(row["signup_page"], row["signups"], row["confirmed"]) for row in rows]


def top_campaigns(*, days: int | None = 30, limit: int = 20) -> list[SourceSignups]:
    """Signups by utm_source / utm_medium / utm_campaign, most first."""
    rows = (_since(days).exclude(utm_source="", utm_medium="", utm_campaign="")
            .values("utm_source", "utm_medium", "utm_campaign").annotate(signups=Count("id"))
            .order_by("-signups")[:limit])
    return [SourceSignups(r["utm_source"], r["utm_medium"], r["utm_campaign"], r["signups"]) for r in rows]
