"""The archive's pages: the index (newest first, paginated) and one alert's page. Both
are public, the same for every visitor, and cached briefly by browsers and proxies:
a correction appears on its alert's page within a minute."""

from __future__ import annotations

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from .pages import PAGE_SIZE, follow_ups_of, public_alert, public_alerts, require_archive

CACHE_SECONDS = 60


@require_GET
@cache_control(public=True, max_age=CACHE_SECONDS)
def index(request: HttpRequest) -> HttpResponse:
    require_archive()
    # get_page turns a missing, non-numeric or out-of-range page into a real one.
    page = Paginator(public_alerts(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "archive/index.html", {"page": page, "publication_time_zone": settings.PUBLICATION_TIME_ZONE})


@require_GET
@cache_control(public=True, max_age=CACHE_SECONDS)
def alert_page(request: HttpRequest, pk: int) -> HttpResponse:
    require_archive()
    alert = public_alert(pk)
    paragraphs = [p.strip() for p in alert.body.split("\n\n") if p.strip()]
    return render(request, "archive/alert.html", {
        "alert": alert, "paragraphs": paragraphs, "follow_ups": follow_ups_of(alert),
        "original": alert.follow_up_of if alert.follow_up_of_id else None,
        "publication_time_zone": settings.PUBLICATION_TIME_ZONE,
    })
