"""Consent evidence: where a reader's action came from, and the append-only record of
each action with the exact wording and privacy notice in force when it was taken."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from ..models import ConsentEvent, Subscriber, Wording
from . import wording
from .network import client_address

Source = ConsentEvent.Source
Purpose = ConsentEvent.Purpose
Action = ConsentEvent.Action


@dataclass(frozen=True)
class RequestMeta:
    """Where a consent action came from; stored according to CONSENT_NETWORK_DATA."""

    ip: str | None = None
    user_agent: str = ""

    def stored_ip(self) -> str | None:
        if settings.CONSENT_NETWORK_DATA == "none" or not self.ip:
            return None
        try:
            address = ipaddress.ip_address(self.ip)
        except ValueError:
            return None
        if settings.CONSENT_NETWORK_DATA == "truncated":
            prefix = 24 if address.version == 4 else 48
            return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
        return str(address)

    def stored_user_agent(self) -> str:
        if settings.CONSENT_NETWORK_DATA == "none":
            return ""
        return self.user_agent[:400]


def request_meta(request: HttpRequest) -> RequestMeta:
    """Where the request came from: the client address as the trusted proxies saw it
    (network.client_address, the same one the rate limits count), and the user agent."""
    user_agent = request.META.get("HTTP_USER_AGENT", "")
    return RequestMeta(ip=client_address(request), user_agent=user_agent if isinstance(user_agent, str) else "")


def record_consent(
    *, subscriber: Subscriber, purpose: str, action: str, source: str,
    meta: RequestMeta, note: str = "", wording_kind: str | None = None,
    shown: Wording | None = None, privacy_notice: Wording | None = None,
) -> ConsentEvent:
    """Append one consent event with the wording and privacy notice now in force.

    `wording_kind` names the text the reader was shown when it differs from the
    purpose's own signup wording (the preference centre shows its own); `shown` and
    `privacy_notice` give the exact texts instead, when they were kept from the moment
    the reader asked (a ConsentRequest)."""
    kind = wording_kind or (
        Wording.Kind.MARKETING if purpose == Purpose.MARKETING else Wording.Kind.ALERTS
    )
    return ConsentEvent.objects.create(
        subscriber=subscriber,
        purpose=purpose,
        action=action,
        source=source,
        wording=shown or wording.current(kind),
        privacy_notice=privacy_notice or wording.current(Wording.Kind.PRIVACY),
        ip_address=meta.stored_ip(),
        user_agent=meta.stored_user_agent(),
        note=note,
    )
