"""API tokens: made by an admin per integration, shown once, kept as a SHA-256,
revocable, each with a last-used time and a rate limit of its own."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone
from django_ratelimit.core import get_usage

from ..common.network import ratelimit_key
from ..models import ApiToken
from .problems import Problem

logger = logging.getLogger(__name__)

SCHEME = "sp"
# last_used_at is written at most this often per token, so a CMS polling progress
# every second does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)
RATE_GROUP = "stoppress.api"
FAILURE_GROUP = "stoppress.api-auth-failures"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_create(*, name: str, scope: str, user=None) -> tuple[ApiToken, str]:
    """A new token for one integration. Returns the row and the token itself, which
    is never stored: show it to the admin now, once."""
    prefix = secrets.token_hex(6)
    token = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiToken.objects.create(name=name, scope=scope, prefix=prefix, secret_hash=_digest(token),
                                  created_by=user)
    logger.info("API token %s (%s) created by user %s", prefix, name, getattr(user, "pk", None))
    return row, token


def token_revoke(*, token_ids: list[int]) -> int:
    """Revoke at once: the next request with these tokens is refused. Returns how many
    were still active."""
    return ApiToken.objects.active().filter(pk__in=token_ids).update(revoked_at=Now())


def token_authenticate(token: str) -> ApiToken | None:
    """The active token this is, or None (malformed, unknown, revoked or wrong). Marks
    it used."""
    scheme, _, rest = token.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or not prefix or not secret or len(prefix) > 16:
        return None
    row = ApiToken.objects.active().filter(prefix=prefix).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(token)):
        return None
    _mark_used(row)
    return row


def _mark_used(row: ApiToken) -> None:
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=row.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        row.last_used_at = now


def check_rate(request: HttpRequest, row: ApiToken) -> None:
    """Count this request against its token's API_RATE_PER_TOKEN; past it, raise a
    429 problem saying when to come back."""
    usage = get_usage(request, group=RATE_GROUP, key=lambda group, request: f"token:{row.pk}",
                      rate=settings.API_RATE_PER_TOKEN, increment=True)
    if usage and usage["should_limit"]:
        wait = max(1, usage["time_left"])
        raise Problem(429, f"This token may make {settings.API_RATE_PER_TOKEN} requests; "
                           f"try again in {wait} s.", slug="rate-limited",
                      headers={"Retry-After": str(wait)})


def count_failure(request: HttpRequest) -> None:
    """Count a request with a missing or wrong token against its client
    (network.client_address); past API_AUTH_FAILURES_PER_IP, raise a 429 problem
    instead of the 401. A token cannot be guessed (256 random bits): this keeps a
    flood of tries cheap and visible, and never holds back a valid token from the
    same address."""
    usage = get_usage(request, group=FAILURE_GROUP, key=ratelimit_key,
                      rate=settings.API_AUTH_FAILURES_PER_IP, increment=True)
    if usage and usage["should_limit"]:
        wait = max(1, usage["time_left"])
        raise Problem(429, f"Too many requests with a wrong token from here; try again in {wait} s.",
                      slug="rate-limited", headers={"Retry-After": str(wait)})
