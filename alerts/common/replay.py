"""One use per signed request: a provider's one-time token (Mailgun's `token`,
Svix's `svix-id`) is remembered in the cache's Redis database for longer than a
timestamp is accepted, so a captured request can be neither replayed within the
freshness window nor after it."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone


class Replayed(Exception):
    """The request is stale, from the future, or its one-time token was used before."""


def _key(namespace: str, token: str) -> str:
    # Hashed: tokens are the provider's free text, and cache keys must be short and safe.
    return f"replay:{namespace}:{hashlib.sha256(token.encode()).hexdigest()}"


def claim_once(*, namespace: str, timestamp: object, token: object) -> str:
    """Accept a signed request once: its `timestamp` (Unix seconds) within
    WEBHOOK_MAX_AGE_SECONDS of now, either way, and its `token` never seen before.
    Returns the claim's key (to `release` if handling fails). Raises Replayed."""
    try:
        stamp = float(str(timestamp))
    except ValueError:
        raise Replayed("timestamp is not a number") from None
    if not isinstance(token, str) or not token or len(token) > 500:
        raise Replayed("no usable one-time token")
    if abs(timezone.now().timestamp() - stamp) > settings.WEBHOOK_MAX_AGE_SECONDS:
        raise Replayed("stale or future timestamp")
    key = _key(namespace, token)
    # Kept for twice the window, so a token is remembered for as long as its
    # timestamp could still pass (clock skew either way included).
    if not cache.add(key, 1, timeout=2 * settings.WEBHOOK_MAX_AGE_SECONDS):
        raise Replayed("token used before")
    return key


def release(key: str) -> None:
    """Forget a claim whose request failed on our side, so the provider's retry of it
    (same token) is accepted."""
    cache.delete(key)
