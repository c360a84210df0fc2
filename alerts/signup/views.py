"""Reader-facing signup: the page, the embedded box, the JSON endpoint, and the
confirmation link with its resend."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from ..common import metrics
from ..common.addresses import INVALID_MESSAGE, suggest_domain
from ..common.consent import request_meta
from ..common.ratelimits import SIGNUP, per_client_limit
from ..emails import purposes_text
from ..models import ConsentEvent
from . import services
from .forms import SignupForm
from .services import ConfirmOutcome

logger = logging.getLogger(__name__)

THANKS = "Thanks for signing up to the breaking news emails"
CHECK_INBOX = "We have sent you an email: click the link in it to confirm your subscription."
TOO_MANY = "Too many attempts from your connection. Please wait a while and try again."


def handle_signup(request: HttpRequest, data, source: str) -> SignupForm:
    """Validate and act on one signup. Every valid address, new or known, takes the
    same path here, so the response says nothing about who is subscribed."""
    form = SignupForm(data)
    if form.is_valid() and not form.is_bot:
        services.signup_request(
            email=form.cleaned_data["email"],
            marketing=form.cleaned_data["marketing"],
            source=source,
            meta=request_meta(request),
            timezone_name=form.cleaned_data["tz"],
        )
    # Observability: signups accepted and refused (alerts/common/metrics.py). A bot
    # counts as refused here, though it is shown the same thanks.
    outcome = "accepted" if form.is_valid() and not form.is_bot else ("bot" if form.is_valid() else "invalid")
    metrics.SIGNUPS.labels(source=source, outcome=outcome).inc()
    return form


def _thanks_context(form: SignupForm) -> dict:
    return {"thanks": THANKS, "check_inbox": CHECK_INBOX,
            "suggestion": suggest_domain(form.cleaned_data["email"])}


@never_cache
@require_http_methods(["GET", "POST"])
@per_client_limit(SIGNUP)
def signup(request: HttpRequest) -> HttpResponse:
    return _signup_page(request, "alerts/signup.html", ConsentEvent.Source.WEB)


@never_cache
@csrf_exempt  # the iframe's own origin check stands in for the cookie (see below)
@xframe_options_exempt
@require_http_methods(["GET", "POST"])
@per_client_limit(SIGNUP)
def embed(request: HttpRequest) -> HttpResponse:
    # Inside a third-party page our CSRF cookie is not sent (SameSite), so the embed
    # form is protected by checking the browser's Origin header is our own site.
    if request.method == "POST" and not _same_origin(request):
        return HttpResponse("Forbidden", status=403)
    return _frameable(_signup_page(request, "alerts/embed.html", ConsentEvent.Source.EMBED))


def _frameable(response: HttpResponse) -> HttpResponse:
    """Let the configured partner sites, and only them, put this response in a frame:
    the site's Content-Security-Policy with frame-ancestors widened to them."""
    ancestors = ["'self'", *settings.EMBED_FRAME_ANCESTORS]
    response["Content-Security-Policy"] = build_policy(replace={"frame-ancestors": ancestors})
    response.xframe_options_exempt = True
    return response


def _same_origin(request: HttpRequest) -> bool:
    origin = request.META.get("HTTP_ORIGIN") or request.META.get("HTTP_REFERER", "")
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc == request.get_host()


def _signup_page(request: HttpRequest, template: str, source: str) -> HttpResponse:
    if request.method == "GET":
        return render(request, template, {"form": SignupForm()})
    form = handle_signup(request, request.POST, source)
    if not form.is_valid():
        return render(request, template, {"form": form}, status=400)
    return render(request, template, {"form": form, **_thanks_context(form)})


@csrf_exempt
@require_POST
@per_client_limit(SIGNUP)
def api_subscribe(request: HttpRequest) -> JsonResponse:
    """JSON signup for embedded forms: {"email", "marketing", "tz"}.

    CSRF-exempt because it only accepts application/json, which a browser will not
    send cross-origin without a CORS preflight that only CORS_ALLOWED_ORIGINS pass.
    """
    if request.content_type != "application/json":
        return JsonResponse({"ok": False, "message": "Send application/json."}, status=415)
    try:
        payload = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        return JsonResponse({"ok": False, "message": "The request body is not valid JSON."}, status=400)
    if not isinstance(payload, dict):
        return JsonResponse({"ok": False, "message": "Send a JSON object."}, status=400)
    data = {
        "email": payload.get("email") if isinstance(payload.get("email"), str) else "",
        "marketing": "on" if payload.get("marketing") is True else "",
        "website": payload.get("website") if isinstance(payload.get("website"), str) else "",
        "tz": payload.get("tz") if isinstance(payload.get("tz"), str) else "",
    }
    form = handle_signup(request, data, ConsentEvent.Source.API)
    if not form.is_valid():
        errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
        return JsonResponse({"ok": False, "message": INVALID_MESSAGE, "errors": errors}, status=400)
    context = _thanks_context(form)
    return JsonResponse({"ok": True, "message": context["thanks"],
                         "detail": context["check_inbox"], "suggestion": context["suggestion"]})


def rate_limited(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer for anything over its rate limit: 429, in the caller's language."""
    metrics.SIGNUPS.labels(source="any", outcome="rate_limited").inc()  # Observability hook
    if request.path.startswith("/api/"):
        return JsonResponse({"ok": False, "message": TOO_MANY}, status=429)
    response = render(request, "alerts/429.html", {"message": TOO_MANY}, status=429)
    # Inside a partner's iframe, X-Frame-Options DENY would leave a blank box instead.
    return _frameable(response) if request.path == reverse("alerts:embed") else response


@never_cache
@require_http_methods(["GET", "POST"])
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a Confirm button (mail scanners open links; they must not confirm);
    POST confirms."""
    if request.method == "GET":
        purposes = services.consent_request_purposes(token=token)
        return render(request, "alerts/confirm.html", {"token": token, "purposes": purposes,
                                                       "asked": purposes_text(purposes)})
    result = services.consent_request_confirm(token=token, meta=request_meta(request))
    status = 400 if result.outcome == ConfirmOutcome.INVALID else 200
    return render(request, "alerts/confirmed.html",
                  {"outcome": result.outcome.value, "token": token, "purposes": result.purposes,
                   "asked": purposes_text(result.purposes)}, status=status)


@require_POST
@per_client_limit()
def confirm_resend(request: HttpRequest, token: str) -> HttpResponse:
    """From an expired confirmation link: send a fresh one (cooldown applies)."""
    services.consent_request_resend(token=token)
    return render(request, "alerts/confirmed.html", {"outcome": "resent"})
