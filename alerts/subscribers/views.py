"""Reader-facing subscriber control: one-click unsubscribe and its undo, the
preference centre, and the request for a link to it.

Every page here is reached through a signed link token (tokens.link_tokens) in an
email; there are no passwords. A forged or tampered token gets the same "this link
does not work" page whatever it names, and changes nothing.
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from ..common.consent import request_meta
from ..common.ratelimits import per_client_limit
from ..common.tokens import link_tokens, reengage_tokens, subscriber_for, unsubscribe_owner
from ..models import ConsentEvent
from . import reengagement, services
from .forms import PreferencesForm, PreferencesRequestForm

logger = logging.getLogger(__name__)

Source = ConsentEvent.Source


def _invalid_link(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/link_invalid.html", status=400)


def _via_one_click(request: HttpRequest) -> bool:
    """Whether the POST came from a mail client's one-click button (RFC 8058 body
    `List-Unsubscribe=One-Click`) rather than our own page. Used only to label the
    consent evidence: the unsubscribe happens either way."""
    try:
        return b"One-Click" in request.body[:8192]
    except (RequestDataTooBig, UnreadablePostError):
        return False


@never_cache
@csrf_exempt  # RFC 8058: mailbox providers POST with no cookies and no CSRF token
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET and HEAD show an Unsubscribe button and change nothing: mail scanners fetch
    every link. POST (our button, or the one-click POST) unsubscribes synchronously
    and answers 200, never a redirect. Repeating it is harmless."""
    subscriber_id = unsubscribe_owner(token)
    if subscriber_id is None:
        return _invalid_link(request)
    if request.method != "POST":
        return render(request, "alerts/unsubscribe.html", {"token": token})
    source = Source.ONE_CLICK if _via_one_click(request) else Source.EMAIL_LINK
    services.subscriber_unsubscribe(subscriber_id=subscriber_id, source=source,
                                    meta=request_meta(request))
    # Undo needs a current link: an old or revoked one only ever unsubscribes.
    can_undo = subscriber_for(link_tokens, token) is not None
    return render(request, "alerts/unsubscribed.html", {"token": token, "can_undo": can_undo})



@never_cache
@require_POST
@per_client_limit()
def unsubscribe_undo(request: HttpRequest, token: str) -> HttpResponse:
    """"Unsubscribed by mistake?": resubscribes at once within UNSUBSCRIBE_UNDO_HOURS
    of unsubscribing, otherwise emails a fresh confirmation (services.subscriber_resubscribe)."""
    subscriber = subscriber_for(link_tokens, token)
    if subscriber is None:
        return _invalid_link(request)
    outcome = services.subscriber_resubscribe(subscriber_id=subscriber.pk, source=Source.EMAIL_LINK,
                                              meta=request_meta(request))
    return render(request, "alerts/resubscribed.html", {"outcome": outcome.value, "token": token})


@never_cache
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    """The preference centre: alerts on or off, topics, frequency, marketing, time zone."""
    subscriber = subscriber_for(link_tokens, token)
    if subscriber is None:
        return _invalid_link(request)
    context = {"token": token, "subscriber": subscriber}
    if request.method == "GET":
        form = PreferencesForm(initial=PreferencesForm.initial_for(subscriber))
        return render(request, "alerts/preferences.html", {**context, "form": form})
    form = PreferencesForm(request.POST)
    if not form.is_valid():
        return render(request, "alerts/preferences.html", {**context, "form": form}, status=400)
    result = services.subscriber_update_preferences(
        subscriber_id=subscriber.pk, choices=form.choices(), meta=request_meta(request))
    subscriber.refresh_from_db()
    form = PreferencesForm(initial=PreferencesForm.initial_for(subscriber))
    return render(request, "alerts/preferences.html", {**context, "form": form, "result": result})


@never_cache
@require_http_methods(["GET", "POST"])
@per_client_limit()
def preferences_request(request: HttpRequest) -> HttpResponse:
    """Lost the email? Enter the address and we email a fresh link. The answer is the
    same for every well-formed address, subscribed or not."""
    if request.method == "GET":
        return render(request, "alerts/preferences_request.html", {"form": PreferencesRequestForm()})
    form = PreferencesRequestForm(request.POST)
    if not form.is_valid():
        return render(request, "alerts/preferences_request.html", {"form": form}, status=400)
    if not form.is_bot:
        services.subscriber_request_preferences_link(email=form.cleaned_data["email"])
    return render(request, "alerts/preferences_request.html", {"form": form, "sent": True})


@never_cache
@require_http_methods(["GET", "POST"])
@per_client_limit()
def reengage_keep(request: HttpRequest, token: str) -> HttpResponse:
    """"Still want these?": GET shows a "Yes, keep sending" button and changes nothing
    (mail scanners fetch every link); the POST keeps the reader subscribed. A forged,
    expired or revoked link gets the same "this link does not work" page."""
    subscriber = subscriber_for(reengage_tokens, token)
    if subscriber is None:
        return _invalid_link(request)
    if request.method != "POST":
        return render(request, "alerts/reengage.html", {"token": token})
    kept = reengagement.reengage_keep(subscriber=subscriber, meta=request_meta(request))
    return render(request, "alerts/reengage.html", {"token": token, "kept": kept, "answered": True})
