"""Reader-facing data rights: the privacy notice, asking for a link to download or
erase everything we hold about you, and the pages those links open.

The download and erase pages take a token of their own (tokens.data_tokens): emailed
on request, valid for DATA_LINK_MAX_AGE and once. A forged, expired, used or revoked
one changes nothing and gets the same page whatever it names."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..common.ratelimits import per_client_limit
from ..common.tokens import current_claim, data_tokens, link_tokens, subscriber_for
from ..models import RightsEvent
from . import links
from .erase import subscriber_erase
from .export import subscriber_data_export
from .log import exported_since


def _invalid_link(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/link_invalid.html", status=400)


@require_GET
def privacy(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/privacy.html", {
        "notice": settings.PRIVACY_NOTICE_TEXT, "version": settings.PRIVACY_NOTICE_VERSION,
    })


@never_cache
@require_POST
@per_client_limit()
def data_request(request: HttpRequest, token: str) -> HttpResponse:
    """From the preference centre: email a download or erasure link to the reader's
    own address (a per-address cooldown applies in the task)."""
    subscriber = subscriber_for(link_tokens, token)
    purpose = request.POST.get("purpose")
    if subscriber is None or purpose not in links.PURPOSES:
        return _invalid_link(request)
    links.data_link_request(subscriber_id=subscriber.pk, purpose=purpose)
    return render(request, "alerts/data_link_sent.html", {"token": token, "purpose": purpose,
                                                          "valid_minutes": settings.DATA_LINK_MAX_AGE // 60})


@never_cache
@require_http_methods(["GET", "POST"])
def data_export(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a Download button; POST returns everything we hold as a JSON
    attachment, once. The POST keeps the data out of link scanners and proxies' logs."""
    subscriber = subscriber_for(data_tokens["export"], token)
    if subscriber is None or exported_since(subscriber.pk, current_claim(data_tokens["export"], token).issued_at):
        return _invalid_link(request)
    if request.method == "GET":
        return render(request, "alerts/data_export.html", {"token": token})
    payload = subscriber_data_export(subscriber_id=subscriber.pk, via=RightsEvent.Via.EMAIL_LINK)
    if payload is None:  # erased between the page and the button
        return _invalid_link(request)
    response = HttpResponse(payload, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="my-email-subscription-data.json"'
    return response


@never_cache
@require_http_methods(["GET", "POST"])
def erase(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks for confirmation; POST erases. The link dies with the erasure, but a
    second press of the button (a double click) still shows that it is done."""
    subscriber = subscriber_for(data_tokens["erase"], token)
    if request.method == "POST" and subscriber is None:
        claim = current_claim(data_tokens["erase"], token)
        erased = claim is not None and RightsEvent.objects.filter(
            kind=RightsEvent.Kind.ERASURE, subscriber_ref=claim.subject_id).exists()
        return render(request, "alerts/erased.html") if erased else _invalid_link(request)
    if subscriber is None:
        return _invalid_link(request)
    if request.method == "GET":
        return render(request, "alerts/erase.html", {"token": token})
    subscriber_erase(subscriber_id=subscriber.pk)
    return render(request, "alerts/erased.html")
