"""The provider webhook URLs (/anymail/<esp>/tracking/): anymail's own views, with
replay protection added where the provider signs its requests with a timestamp and a
one-time token.

Anymail checks Mailgun's signature, which covers the timestamp and token but not the
body, and checks neither freshness nor reuse: one captured request would let anyone
post complaints for any address and suppress the whole list. So for Mailgun (and
Resend, whose Svix signature carries an id and a timestamp) a request is refused if
its timestamp is more than WEBHOOK_MAX_AGE_SECONDS away from now or its token was
seen before. Providers that sign the whole body (MailerSend, Postal, Unisender Go,
Mandrill) can only be replayed word for word, and every event applies once anyway
(tracking.py dedupes on the event id).

Only tracking webhooks are exposed: nothing here reads inbound mail.
"""

from __future__ import annotations

import json

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.urls import urlpatterns as anymail_urlpatterns
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.resend import ResendTrackingWebhookView
from django.http import HttpRequest, HttpResponse
from django.urls import path

from .common.replay import Replayed, claim_once, release


class ReplayGuardMixin:
    """Refuse a signed request seen before or outside the freshness window, after the
    view's own signature check; forget it again if handling it fails, so the
    provider's retry goes through."""

    replay_namespace = ""

    def signed_once_fields(self, request: HttpRequest) -> tuple[object, object] | None:
        """(timestamp, one-time token) of a signed request; None when unsigned."""
        raise NotImplementedError

    def validate_request(self, request: HttpRequest) -> None:
        super().validate_request(request)
        fields = self.signed_once_fields(request)
        if fields is None:
            return
        try:
            request._replay_claim = claim_once(namespace=self.replay_namespace, timestamp=fields[0],
                                               token=fields[1])
        except Replayed as refused:
            raise AnymailWebhookValidationFailure(f"{self.esp_name} webhook refused: {refused}") from None

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return super().post(request, *args, **kwargs)
        except Exception:
            claim = getattr(request, "_replay_claim", None)
            if claim:
                release(claim)
            raise


class MailgunTracking(ReplayGuardMixin, MailgunTrackingWebhookView):
    replay_namespace = "mailgun"

    def signed_once_fields(self, request: HttpRequest) -> tuple[object, object]:
        # The signature was just verified over exactly these fields.
        if request.content_type == "application/json":
            signature = json.loads(request.body.decode("utf-8"))["signature"]
            return signature["timestamp"], signature["token"]
        return request.POST["timestamp"], request.POST["token"]


class ResendTracking(ReplayGuardMixin, ResendTrackingWebhookView):
    replay_namespace = "resend"

    def signed_once_fields(self, request: HttpRequest) -> tuple[object, object] | None:
        if not getattr(self, "_svix_webhook", None):
            return None  # unsigned (basic auth only): nothing to bind a replay check to
        return request.headers.get("svix-timestamp"), request.headers.get("svix-id")


GUARDED = {"mailgun_tracking_webhook": MailgunTracking, "resend_tracking_webhook": ResendTracking}

app_name = "anymail"
urlpatterns = [
    path(str(pattern.pattern), GUARDED[pattern.name].as_view(), name=pattern.name)
    if pattern.name in GUARDED else pattern
    for pattern in anymail_urlpatterns
    if pattern.name and pattern.name.endswith("_tracking_webhook")
]
