"""Reader-facing data rights: the privacy notice, downloading everything we hold
about you, and erasing it. The download and erase pages are reached through a signed
link token in an email; a forged or expired one changes nothing."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from ..common.tokens import link_owner
from ..models import Subscriber
from .erase import subscriber_erase
from .export import subscriber_data_json


def _invalid_link(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/link_invalid.html", status=400)


@require_GET
def privacy(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/privacy.html", {
        "notice": settings.PRIVACY_NOTICE_TEXT, "version": settings.PRIVACY_NOTICE_VERSION,
    })


@never_cache
@require_http_methods(["GET", "POST"])
def data_export(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a Download button; POST returns everything we hold as a JSON
    attachment. The POST keeps the data out of link scanners and proxies' logs."""
    subscriber_id = link_owner(token)
    if subscriber_id is None or not Subscriber.objects.filter(pk=subscriber_id).exists():
        return _invalid_link(request)
    if request.method == "GET":
        return render(request, "alerts/data_export.html", {"token": token})
    payload = subscriber_data_json(subscriber_id)
    if payload is None:  # erased between the page and the button
        return _invalid_link(request)
    response = HttpResponse(payload, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="my-email-subscription-data.json"'
    return response


@never_cache
@require_http_methods(["GET", "POST"])
def erase(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks for confirmation; POST erases. Erasing twice shows the same page."""
    subscriber_id = link_owner(token)
    if subscriber_id is None:
        return _invalid_link(request)
    if request.method == "GET":
        if not Subscriber.objects.filter(pk=subscriber_id).exists():
            return _invalid_link(request)
        return render(request, "alerts/erase.html", {"token": token})
    subscriber_erase(subscriber_id=subscriber_id)
    return render(request, "alerts/erased.html")
